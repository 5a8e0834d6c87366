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
 * Shared set-up of the stub-based suite: a configured plugin, the events Moodle would raise, and a
 * cron stand-in that runs the queued tasks at a chosen time.
 *
 * @package    local_zohosync
 * @copyright  2026 sync_pipelines contributors
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

use local_zohosync\task\send_event;
use PHPUnit\Framework\TestCase;

/**
 * Base class of the suite's tests.
 */
abstract class ZohosyncTestCase extends TestCase {

    /** @var string The secret of the shared fixture (sync_pipelines_tests/webhooks/fixtures/moodle_user_graded.json). */
    public const SECRET = 'test-only-webhook-secret-3c1f9a7e5b2d4086';

    /** @var string Tenant id of the shared fixture. */
    public const TENANT = 'demo_school';

    /** @var string Receiver base URL used throughout. */
    public const RECEIVER = 'https://sync.example.org';

    /** @var string The repository's root (the plugin sits at moodle_plugin/local_zohosync). */
    public const REPO_ROOT = __DIR__ . '/../../..';

    /**
     * A configured plugin with every event enabled and nothing queued, sent or logged.
     */
    protected function setUp(): void {
        parent::setUp();
        zohosync_stub::reset();
        $this->configure([]);
    }

    /**
     * Set the plugin's settings: the defaults below, changed by $overrides (null unsets a setting).
     *
     * @param array $overrides
     */
    protected function configure(array $overrides): void {
        $settings = $overrides + [
            'receiverurl' => self::RECEIVER,
            'tenant' => self::TENANT,
            'secret' => self::SECRET,
            'events' => implode(',', array_keys(\local_zohosync\config::EVENTS)),
            'timeout' => '10',
        ];
        foreach ($settings as $name => $value) {
            set_config($name, $value, 'local_zohosync');
        }
    }

    /**
     * Add grade items to the stub database.
     *
     * @param array ...$items records as Moodle's DB layer answers them (strings, null).
     */
    protected function grade_items(array ...$items): void {
        foreach ($items as $item) {
            zohosync_stub::$tables['grade_items'][(string) $item['id']] = (object) $item;
        }
    }

    /**
     * Run every queued task as cron would (a fresh task object from the stored class and custom data),
     * signing at $now. Exceptions are collected, not thrown: a throwing task stays queued for a retry.
     *
     * @param int $now the Unix time of the attempt.
     * @return Throwable[] what the tasks threw, in queue order (null for a task that completed).
     */
    protected function run_queue(int $now): array {
        $results = [];
        $remaining = [];
        foreach (zohosync_stub::$queue as $record) {
            $this->assertSame('\\' . send_event::class, $record['classname']);
            $task = self::task_at($now);
            $task->set_custom_data_as_string($record['customdata']);
            try {
                $task->execute();
                $results[] = null;
            } catch (Throwable $e) {
                $results[] = $e;
                $remaining[] = $record;
            }
        }
        zohosync_stub::$queue = $remaining;
        return $results;
    }

    /**
     * A send_event task whose clock says $now.
     *
     * @param int $now
     * @return send_event
     */
    protected static function task_at(int $now): send_event {
        return new class($now) extends send_event {
            /** @var int */
            private $clock;

            /**
             * @param int $clock
             */
            public function __construct(int $clock) {
                $this->clock = $clock;
            }

            /**
             * @return int
             */
            protected function now(): int {
                return $this->clock;
            }
        };
    }

    /**
     * The payload a queued task refers to, decoded to arrays; the task's custom data must be only
     * {"queueid": <its row>}.
     *
     * @param int $index the task's place in the queue.
     * @return array
     */
    protected function queued_payload(int $index = 0): array {
        $this->assertArrayHasKey($index, zohosync_stub::$queue);
        $customdata = zohosync_stub::$queue[$index]['customdata'];
        $this->assertMatchesRegularExpression('/^\{"queueid":[1-9][0-9]*\}$/', $customdata,
            'the task carries only the id of its payload');
        $id = json_decode($customdata)->queueid;
        $row = zohosync_stub::$tables[\local_zohosync\queue::TABLE][(string) $id] ?? null;
        $this->assertNotNull($row, "the payload of queued task {$index} is in the queue table");
        return json_decode($row->payload, true, 512, JSON_THROW_ON_ERROR);
    }

    /**
     * The rows of the queue table.
     *
     * @return object[] id => row.
     */
    protected static function queue_rows(): array {
        return zohosync_stub::$tables[\local_zohosync\queue::TABLE] ?? [];
    }

    /**
     * The headers of a captured request as name => value.
     *
     * @param array $request an entry of zohosync_stub::$requests.
     * @return array<string, string>
     */
    protected static function headers_of(array $request): array {
        $headers = [];
        foreach ($request['headers'] as $line) {
            [$name, $value] = explode(': ', $line, 2);
            $headers[$name] = $value;
        }
        return $headers;
    }

    // The events, as get_data() returns them in Moodle 4.x (values typed as Moodle's code and DB layer
    // leave them: some ints, some strings). Distinctive values (user 57, grade 87.50000) let the tests
    // look for event data in the logs.

    /**
     * @return array get_data() of \core\event\user_created (an administrator creates user 57).
     */
    public static function user_created_data(): array {
        return [
            'eventname' => '\core\event\user_created',
            'component' => 'core',
            'action' => 'created',
            'target' => 'user',
            'objecttable' => 'user',
            'objectid' => 57,
            'crud' => 'c',
            'edulevel' => 0,
            'contextid' => 318,
            'contextlevel' => 30,
            'contextinstanceid' => 57,
            'userid' => '2',
            'courseid' => 0,
            'relateduserid' => 57,
            'anonymous' => 0,
            'other' => null,
            'timecreated' => 1769336000,
        ];
    }

    /**
     * @return array get_data() of \core\event\user_updated.
     */
    public static function user_updated_data(): array {
        return [
            'eventname' => '\core\event\user_updated',
            'component' => 'core',
            'action' => 'updated',
            'target' => 'user',
            'objecttable' => 'user',
            'objectid' => '57',
            'crud' => 'u',
            'edulevel' => 0,
            'contextid' => '318',
            'contextlevel' => 30,
            'contextinstanceid' => '57',
            'userid' => '2',
            'courseid' => 0,
            'relateduserid' => '57',
            'anonymous' => 0,
            'other' => null,
            'timecreated' => 1769336100,
        ];
    }

    /**
     * @return array get_data() of \core\event\user_enrolment_created (manual enrolment in course 12).
     */
    public static function user_enrolment_created_data(): array {
        return [
            'eventname' => '\core\event\user_enrolment_created',
            'component' => 'core',
            'action' => 'created',
            'target' => 'user_enrolment',
            'objecttable' => 'user_enrolments',
            'objectid' => 901,
            'crud' => 'c',
            'edulevel' => 0,
            'contextid' => '214',
            'contextlevel' => 50,
            'contextinstanceid' => '12',
            'userid' => '2',
            'courseid' => '12',
            'relateduserid' => 57,
            'anonymous' => 0,
            'other' => ['enrol' => 'manual'],
            'timecreated' => 1769336200,
        ];
    }

    /**
     * @return array get_data() of \core\event\user_enrolment_deleted (other holds the removed enrolment).
     */
    public static function user_enrolment_deleted_data(): array {
        return [
            'eventname' => '\core\event\user_enrolment_deleted',
            'component' => 'core',
            'action' => 'deleted',
            'target' => 'user_enrolment',
            'objecttable' => 'user_enrolments',
            'objectid' => '901',
            'crud' => 'd',
            'edulevel' => 0,
            'contextid' => '214',
            'contextlevel' => 50,
            'contextinstanceid' => '12',
            'userid' => '2',
            'courseid' => '12',
            'relateduserid' => '57',
            'anonymous' => 0,
            'other' => [
                'userenrolment' => [
                    'id' => '901',
                    'status' => '0',
                    'enrolid' => '31',
                    'userid' => '57',
                    'timestart' => '1769300000',
                    'timeend' => '0',
                    'modifierid' => '2',
                    'timecreated' => '1769336200',
                    'timemodified' => '1769336200',
                    'courseid' => '12',
                    'enrol' => 'manual',
                    'lastenrol' => true,
                ],
                'enrol' => 'manual',
            ],
            'timecreated' => 1769336300,
        ];
    }

    /**
     * @return array get_data() of \core\event\user_enrolment_updated: the enrolment of user 57 in course 12
     * suspended by hand (enrol_plugin::update_user_enrol(); types as a Moodle 4.5 site gave them).
     */
    public static function user_enrolment_updated_data(): array {
        return [
            'eventname' => '\core\event\user_enrolment_updated',
            'component' => 'core',
            'action' => 'updated',
            'target' => 'user_enrolment',
            'objecttable' => 'user_enrolments',
            'objectid' => '901',
            'crud' => 'u',
            'edulevel' => 0,
            'contextid' => 214,
            'contextlevel' => 50,
            'contextinstanceid' => '12',
            'userid' => '2',
            'courseid' => '12',
            'relateduserid' => '57',
            'anonymous' => 0,
            'other' => ['enrol' => 'manual'],
            'timecreated' => 1769336500,
        ];
    }

    /**
     * @return array get_data() of \core\event\course_updated: course 12 renamed and hidden by hand
     * (update_course(); no relateduserid; types as a Moodle 4.5 site gave them).
     */
    public static function course_updated_data(): array {
        return [
            'eventname' => '\core\event\course_updated',
            'component' => 'core',
            'action' => 'updated',
            'target' => 'course',
            'objecttable' => 'course',
            'objectid' => '12',
            'crud' => 'u',
            'edulevel' => 1,
            'contextid' => 214,
            'contextlevel' => 50,
            'contextinstanceid' => '12',
            'userid' => '2',
            'courseid' => '12',
            'relateduserid' => null,
            'anonymous' => 0,
            'other' => [
                'shortname' => 'BTEC-IT-L3-26A',
                'fullname' => 'BTEC IT Level 3, group A (renamed by hand)',
                'updatedfields' => [
                    'fullname' => 'BTEC IT Level 3, group A (renamed by hand)',
                    'visible' => 0,
                ],
            ],
            'timecreated' => 1769336600,
        ];
    }

    /**
     * @return array get_data() of \core\event\user_graded for an assignment (the shared fixture's event).
     */
    public static function user_graded_data(): array {
        return [
            'eventname' => '\core\event\user_graded',
            'component' => 'core',
            'action' => 'graded',
            'target' => 'user',
            'objecttable' => 'grade_grades',
            'objectid' => '1187',
            'crud' => 'u',
            'edulevel' => 2,
            'contextid' => '214',
            'contextlevel' => 50,
            'contextinstanceid' => '12',
            'userid' => '2',
            'courseid' => '12',
            'relateduserid' => '57',
            'anonymous' => 0,
            'other' => ['itemid' => '341', 'overridden' => false, 'finalgrade' => '87.50000'],
            'timecreated' => 1769337000,
        ];
    }

    /**
     * @return array get_data() of the user_graded Moodle raises for the course total at the same time.
     */
    public static function course_total_graded_data(): array {
        return array_replace(self::user_graded_data(), [
            'objectid' => '1188',
            'other' => ['itemid' => '340', 'overridden' => false, 'finalgrade' => '87.50000'],
        ]);
    }

    /**
     * @return array the grade_items row of the assignment (as $DB answers it).
     */
    public static function assignment_item(): array {
        return [
            'id' => '341',
            'courseid' => '12',
            'itemtype' => 'mod',
            'itemmodule' => 'assign',
            'iteminstance' => '8',
            'itemname' => 'Unit 4: Programming / Assignment 1',
            'grademax' => '100.00000',
            'sortorder' => '3',
        ];
    }

    /**
     * @return array the grade_items row of the course total.
     */
    public static function course_total_item(): array {
        return [
            'id' => '340',
            'courseid' => '12',
            'itemtype' => 'course',
            'itemmodule' => null,
            'iteminstance' => '12',
            'itemname' => null,
            'grademax' => '100.00000',
            'sortorder' => '1',
        ];
    }

    /**
     * An event object of the class its data names.
     *
     * @param array $data get_data().
     * @return \core\event\base
     */
    public static function event(array $data): \core\event\base {
        $class = $data['eventname'];
        return $class::from_data($data);
    }
}
