<?php
// This file is part of Moodle - http://moodle.org/
//
// Moodle is free software: you can redistribute it and/or modify
// it under the terms of the GNU General Public License as published by
// the Free Software Foundation, either version 3 of the License, or
// (at your option) any later version.
//
// Moodle is distributed in the hope that it will be useful,
// but WITHOUT ANY WARRANTY; without even the implied warranty of
// MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.  See the
// GNU General Public License for more details.
//
// You should have received a copy of the GNU General Public License
// along with Moodle.  If not, see <http://www.gnu.org/licenses/>.

/**
 * The observer queues a task and never sends; disabled events and an unconfigured plugin queue nothing.
 *
 * @package    local_zohosync
 * @copyright  2026 sync_pipelines contributors
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

use local_zohosync\observer;

/**
 * @covers \local_zohosync\observer
 */
final class ObserverTest extends ZohosyncTestCase {

    /**
     * Every forwarded event, by setting key.
     *
     * @return array[]
     */
    public function events(): array {
        return [
            'user_created' => ['user_created', self::user_created_data()],
            'user_updated' => ['user_updated', self::user_updated_data()],
            'user_enrolment_created' => ['user_enrolment_created', self::user_enrolment_created_data()],
            'user_enrolment_deleted' => ['user_enrolment_deleted', self::user_enrolment_deleted_data()],
            'user_enrolment_updated' => ['user_enrolment_updated', self::user_enrolment_updated_data()],
            'user_graded' => ['user_graded', self::user_graded_data()],
            'course_updated' => ['course_updated', self::course_updated_data()],
        ];
    }

    /**
     * @dataProvider events
     * @param string $key
     * @param array $data
     */
    public function test_an_enabled_event_is_queued_with_its_data_and_nothing_is_sent(string $key, array $data): void {
        $this->grade_items(self::assignment_item());
        zohosync_stub::$uuids = ['0c6a52f9-3b7e-4f1a-9d44-2c8e5b7a1d03'];

        observer::queue_delivery(self::event($data));

        $this->assertSame([], zohosync_stub::$requests, 'the observer must never call the network');
        $this->assertCount(1, zohosync_stub::$queue);
        $this->assertSame('\local_zohosync\task\send_event', zohosync_stub::$queue[0]['classname']);
        $queued = $this->queued_payload(0);
        $expected = $data + ['event_id' => '0c6a52f9-3b7e-4f1a-9d44-2c8e5b7a1d03', 'origin' => observer::origin()];
        if ($key === 'user_graded') {
            $expected['grade_item'] = [
                'id' => '341',
                'itemtype' => 'mod',
                'itemmodule' => 'assign',
                'iteminstance' => '8',
                'itemname' => 'Unit 4: Programming / Assignment 1',
                'grademax' => '100.00000',
                'is_course_total' => false,
            ];
        }
        // Same keys, same order, same values and types: the body is built from exactly this.
        $this->assertSame($expected, $queued);
        $this->assertCount(1, self::queue_rows());
        $this->assertSame([], zohosync_stub::$log);
    }

    public function test_the_course_total_is_marked_and_the_lookup_asks_for_the_item_by_id(): void {
        global $DB;
        $this->grade_items(self::assignment_item(), self::course_total_item());

        observer::queue_delivery(self::event(self::course_total_graded_data()));

        $queued = $this->queued_payload(0);
        $this->assertSame([
            'id' => '340',
            'itemtype' => 'course',
            'itemmodule' => null,
            'iteminstance' => '12',
            'itemname' => null,
            'grademax' => '100.00000',
            'is_course_total' => true,
        ], $queued['grade_item']);
        $this->assertSame(
            [['grade_items', ['id' => '340'], 'id, itemtype, itemmodule, iteminstance, itemname, grademax', IGNORE_MISSING]],
            $DB->calls
        );
    }

    public function test_a_grade_item_that_is_gone_is_sent_as_null(): void {
        observer::queue_delivery(self::event(self::user_graded_data()));

        $queued = $this->queued_payload(0);
        $this->assertArrayHasKey('grade_item', $queued);
        $this->assertNull($queued['grade_item']);
    }

    public function test_only_user_graded_carries_a_grade_item(): void {
        $this->grade_items(self::assignment_item());
        observer::queue_delivery(self::event(self::user_enrolment_created_data()));
        observer::queue_delivery(self::event(self::user_enrolment_updated_data()));
        observer::queue_delivery(self::event(self::course_updated_data()));

        foreach ([0, 1, 2] as $index) {
            $this->assertArrayNotHasKey('grade_item', $this->queued_payload($index));
        }
    }

    public function test_a_course_update_is_sent_without_a_related_user_and_with_its_changed_fields(): void {
        observer::queue_delivery(self::event(self::course_updated_data()));

        $queued = $this->queued_payload(0);
        $this->assertArrayHasKey('relateduserid', $queued);
        $this->assertNull($queued['relateduserid']);
        $this->assertSame(['12', '12', '12'], [$queued['objectid'], $queued['courseid'], $queued['contextinstanceid']]);
        $this->assertSame(['shortname', 'fullname', 'updatedfields'], array_keys($queued['other']));
        $this->assertSame(['fullname' => 'BTEC IT Level 3, group A (renamed by hand)', 'visible' => 0],
            $queued['other']['updatedfields']);
    }

    public function test_the_stubs_refuse_event_data_moodle_could_not_raise(): void {
        // The event data builders are checked against the real classes' init() and validate_data().
        $data = self::user_enrolment_updated_data();
        unset($data['other']['enrol']);
        try {
            self::event($data);
            $this->fail('user_enrolment_updated without other.enrol');
        } catch (coding_exception $e) {
            $this->assertStringContainsString("'enrol' value must be set", $e->getMessage());
        }
        $this->expectException(coding_exception::class);
        self::event(array_replace(self::course_updated_data(), ['edulevel' => 0]));
    }

    public function test_each_event_gets_its_own_event_id(): void {
        observer::queue_delivery(self::event(self::user_updated_data()));
        observer::queue_delivery(self::event(self::user_updated_data()));

        $ids = [$this->queued_payload(0)['event_id'], $this->queued_payload(1)['event_id']];
        $this->assertCount(2, array_unique($ids));
        foreach ($ids as $id) {
            $this->assertMatchesRegularExpression('/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/', $id);
        }
    }

    public function test_disabled_events_are_not_queued(): void {
        $this->configure(['events' => 'user_created,user_graded']);

        observer::queue_delivery(self::event(self::user_updated_data()));
        observer::queue_delivery(self::event(self::user_enrolment_created_data()));
        observer::queue_delivery(self::event(self::user_enrolment_deleted_data()));
        observer::queue_delivery(self::event(self::user_enrolment_updated_data()));
        observer::queue_delivery(self::event(self::course_updated_data()));
        $this->assertSame([], zohosync_stub::$queue);

        observer::queue_delivery(self::event(self::user_created_data()));
        $this->assertCount(1, zohosync_stub::$queue);
    }

    public function test_the_two_events_of_0_3_0_can_be_unticked_and_ticked_alone(): void {
        $this->configure(['events' => 'user_enrolment_updated']);
        observer::queue_delivery(self::event(self::course_updated_data()));
        observer::queue_delivery(self::event(self::user_enrolment_updated_data()));
        $this->assertCount(1, zohosync_stub::$queue);
        $this->assertSame('\core\event\user_enrolment_updated', $this->queued_payload(0)['eventname']);

        zohosync_stub::reset();
        $this->configure(['events' => 'course_updated']);
        observer::queue_delivery(self::event(self::user_enrolment_updated_data()));
        observer::queue_delivery(self::event(self::course_updated_data()));
        $this->assertCount(1, zohosync_stub::$queue);
        $this->assertSame('\core\event\course_updated', $this->queued_payload(0)['eventname']);
    }

    /**
     * @return array[]
     */
    public function saved_event_settings(): array {
        $five = 'user_created,user_updated,user_enrolment_created,user_enrolment_deleted,user_graded';
        return [
            'the five of 0.2.0' => [$five, implode(',', array_keys(\local_zohosync\config::EVENTS))],
            'some unticked' => ['user_created,user_graded',
                'user_created,user_enrolment_updated,user_graded,course_updated'],
            'nothing ticked' => ['', ''],
            'never saved' => [null, null],
            'already upgraded' => ['course_updated,user_enrolment_updated', 'user_enrolment_updated,course_updated'],
        ];
    }

    /**
     * @dataProvider saved_event_settings
     * @param string|null $saved
     * @param string|null $upgraded
     */
    public function test_the_upgrade_to_0_3_0_ticks_the_new_events_and_keeps_every_other_choice(?string $saved,
            ?string $upgraded): void {
        $this->configure(['events' => $saved]);
        \local_zohosync\config::tick_new_events(\local_zohosync\config::EVENTS_ADDED[2026120701]);
        $value = get_config('local_zohosync', 'events');
        $this->assertSame($upgraded ?? false, $value);
    }

    public function test_with_every_event_unticked_nothing_is_queued(): void {
        $this->configure(['events' => '']);
        foreach ($this->events() as [$key, $data]) {
            observer::queue_delivery(self::event($data));
        }
        $this->assertSame([], zohosync_stub::$queue);
        $this->assertSame([], zohosync_stub::$requests);
    }

    public function test_a_setting_never_saved_forwards_every_event(): void {
        $this->configure(['events' => null]);
        foreach ($this->events() as [$key, $data]) {
            observer::queue_delivery(self::event($data));
        }
        $this->assertCount(count(\local_zohosync\config::EVENTS), zohosync_stub::$queue);
        $this->assertCount(7, zohosync_stub::$queue);
    }

    /**
     * @return array[]
     */
    public function incomplete_settings(): array {
        return [
            'no receiver URL' => [['receiverurl' => '']],
            'no tenant' => [['tenant' => null]],
            'no secret' => [['secret' => '']],
            'a tenant id the receiver cannot have' => [['tenant' => 'demo school']],
            'an endpoint URL instead of the base' => [['receiverurl' => 'https://sync.example.org/v1/webhooks/moodle/demo_school']],
            'not http' => [['receiverurl' => 'ftp://sync.example.org']],
            'credentials in the URL' => [['receiverurl' => 'https://user:pw@sync.example.org']],
        ];
    }

    /**
     * @dataProvider incomplete_settings
     * @param array $overrides
     */
    public function test_an_unconfigured_plugin_queues_nothing(array $overrides): void {
        $this->configure($overrides);
        observer::queue_delivery(self::event(self::user_created_data()));
        $this->assertSame([], zohosync_stub::$queue);
        $this->assertSame([], zohosync_stub::$log);
    }

    public function test_events_it_does_not_forward_are_ignored(): void {
        observer::queue_delivery(\core\event\user_loggedin::from_data(['objectid' => 57]));
        $this->assertSame([], zohosync_stub::$queue);
    }

    public function test_an_event_that_cannot_be_queued_does_not_interrupt_the_user(): void {
        global $CFG;
        $CFG->debug = DEBUG_DEVELOPER;
        $data = self::user_created_data();
        $data['other'] = ['note' => "\xB1\x31 not UTF-8"]; // json_encode() cannot take it.

        observer::queue_delivery(self::event($data));

        $this->assertSame([], zohosync_stub::$queue);
        $this->assertSame([], self::queue_rows(), 'nothing is stored');
        $this->assertSame(
            ['debugging: local_zohosync: could not queue the delivery of a \core\event\user_created event (JsonException)'],
            zohosync_stub::$log
        );
    }

    /**
     * @dataProvider events
     * @param string $key
     * @param array $data
     */
    public function test_the_task_carries_only_the_id_of_its_payload(string $key, array $data): void {
        $this->grade_items(self::assignment_item());
        observer::queue_delivery(self::event($data));

        [$task] = zohosync_stub::$queue;
        $this->assertSame('{"queueid":1}', $task['customdata'], 'Moodle prints the custom data in the task log');
        $this->assertSame(['1'], array_map('strval', array_keys(self::queue_rows())));
        $row = self::queue_rows()['1'];
        $this->assertSame(['payload', 'timecreated', 'id'], array_keys(get_object_vars($row)));
        $this->assertIsInt($row->timecreated);
    }

    public function test_a_task_that_cannot_be_queued_leaves_no_payload_behind(): void {
        global $CFG;
        $CFG->debug = DEBUG_DEVELOPER;
        zohosync_stub::$queuefails = true;

        observer::queue_delivery(self::event(self::user_updated_data()));

        $this->assertSame([], zohosync_stub::$queue);
        $this->assertSame([], self::queue_rows());
        $this->assertSame(
            ['debugging: local_zohosync: could not queue the delivery of a \core\event\user_updated event (dml_write_exception)'],
            zohosync_stub::$log
        );
    }
}
