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
 * The delivery task: the exact request, what each answer means, and what is (never) logged.
 *
 * @package    local_zohosync
 * @copyright  2026 sync_pipelines contributors
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

use local_zohosync\observer;
use local_zohosync\signer;
use local_zohosync\task\send_event;

/**
 * @covers \local_zohosync\task\send_event
 * @covers \local_zohosync\signer
 * @covers \local_zohosync\config
 */
final class SendEventTest extends ZohosyncTestCase {

    /** @var int When the attempts are made. */
    private const NOW = 1769337005;

    /** @var string The event id of the queued event. */
    private const EVENT_ID = '7d2b9c1e-5a40-4e8b-b3f6-0c9d8e7f6a51';

    /**
     * Queue one graded event (the assignment) for the tests to deliver.
     */
    private function queue_graded(): void {
        $this->grade_items(self::assignment_item());
        zohosync_stub::$uuids = [self::EVENT_ID];
        observer::queue_delivery(self::event(self::user_graded_data()));
        $this->assertCount(1, zohosync_stub::$queue);
    }

    public function test_it_posts_the_signed_json_body_to_the_tenant_route(): void {
        $this->queue_graded();

        $this->assertSame([null], $this->run_queue(self::NOW));

        $this->assertCount(1, zohosync_stub::$requests);
        $request = zohosync_stub::$requests[0];
        $this->assertSame('POST', $request['method']);
        $this->assertSame('https://sync.example.org/v1/webhooks/moodle/demo_school', $request['url']);
        $body = $request['body'];
        $this->assertIsString($body);
        $expected = self::user_graded_data() + [
            'event_id' => self::EVENT_ID,
            'origin' => 'web',
            'grade_item' => [
                'id' => '341',
                'itemtype' => 'mod',
                'itemmodule' => 'assign',
                'iteminstance' => '8',
                'itemname' => 'Unit 4: Programming / Assignment 1',
                'grademax' => '100.00000',
                'is_course_total' => false,
            ],
        ];
        $this->assertSame(json_encode($expected), $body, 'the body is get_data() + event_id + origin + grade_item, json_encode defaults');
        $this->assertSame([
            'Content-Type: application/json',
            'X-Sync-Timestamp: 1769337005',
            'X-Sync-Signature: sha256=' . hash_hmac('sha256', '1769337005.' . $body, self::SECRET),
        ], $request['headers']);
        $this->assertSame(
            ['CURLOPT_TIMEOUT' => 10, 'CURLOPT_CONNECTTIMEOUT' => 5, 'CURLOPT_FOLLOWLOCATION' => 0],
            $request['options']
        );
        $this->assertSame([], zohosync_stub::$queue, 'a delivered task is done');
        $this->assertSame(['mtrace: local_zohosync: delivered \core\event\user_graded event ' . self::EVENT_ID . ' (HTTP 202).'],
            zohosync_stub::$log);
    }

    public function test_the_settings_shape_the_request(): void {
        $this->configure(['receiverurl' => ' http://sync-service:8780/school-a/ ', 'tenant' => 'school-a_2', 'timeout' => '3']);
        $this->queue_graded();

        $this->run_queue(self::NOW);

        $request = zohosync_stub::$requests[0];
        $this->assertSame('http://sync-service:8780/school-a/v1/webhooks/moodle/school-a_2', $request['url']);
        $this->assertSame(['CURLOPT_TIMEOUT' => 3, 'CURLOPT_CONNECTTIMEOUT' => 3, 'CURLOPT_FOLLOWLOCATION' => 0],
            $request['options']);
    }

    /**
     * @return array[]
     */
    public function timeouts(): array {
        return ['empty' => ['', 10], 'zero' => ['0', 1], 'huge' => ['3600', 60], 'text' => ['soon', 10], 'ok' => ['25', 25]];
    }

    /**
     * @dataProvider timeouts
     * @param string $setting
     * @param int $expected
     */
    public function test_the_timeout_is_kept_within_bounds(string $setting, int $expected): void {
        $this->configure(['timeout' => $setting]);
        $this->queue_graded();
        $this->run_queue(self::NOW);
        $this->assertSame($expected, zohosync_stub::$requests[0]['options']['CURLOPT_TIMEOUT']);
    }

    public function test_a_retry_sends_the_same_body_signed_at_its_own_time(): void {
        $this->queue_graded();
        zohosync_stub::$responses = [['status' => 503, 'body' => '{"status":"rejected"}']];

        [$failure] = $this->run_queue(self::NOW);
        $this->assertInstanceOf(moodle_exception::class, $failure);
        $this->assertCount(1, zohosync_stub::$queue, 'the failed task stays queued for Moodle to retry');
        $this->assertSame([null], $this->run_queue(self::NOW + 120));

        [$first, $second] = zohosync_stub::$requests;
        $this->assertSame($first['body'], $second['body']);
        $this->assertSame('1769337125', self::headers_of($second)['X-Sync-Timestamp']);
        $this->assertSame(signer::signature(self::SECRET, $second['body'], self::NOW + 120),
            self::headers_of($second)['X-Sync-Signature']);
        $this->assertNotSame(self::headers_of($first)['X-Sync-Signature'], self::headers_of($second)['X-Sync-Signature']);
    }

    /**
     * Answers after which the task throws, so that Moodle retries it.
     *
     * @return array[]
     */
    public function retried(): array {
        return [
            '500' => [['status' => 500, 'body' => 'Internal Server Error'], 'HTTP 500'],
            '502' => [['status' => 502, 'body' => ''], 'HTTP 502'],
            '503 (the receiver could not store it)' => [['status' => 503, 'body' => '{}'], 'HTTP 503'],
            '504' => [['status' => 504, 'body' => ''], 'HTTP 504'],
            '408' => [['status' => 408, 'body' => ''], 'HTTP 408'],
            '429' => [['status' => 429, 'body' => ''], 'HTTP 429'],
            'connection refused' => [
                ['status' => 0, 'errno' => 7, 'error' => 'Failed to connect to sync.example.org port 443: Connection refused'],
                'no answer (cURL error 7: Couldn\'t connect to server)',
            ],
            'timeout' => [
                ['status' => 0, 'errno' => 28, 'error' => 'Operation timed out after 10001 milliseconds with 0 bytes received'],
                'no answer (cURL error 28: Timeout was reached)',
            ],
            'URL blocked by Moodle\'s cURL security' => [
                ['status' => 0, 'error' => 'The URL is blocked.'],
                'no answer: The URL is blocked.',
            ],
        ];
    }

    /**
     * @dataProvider retried
     * @param array $response
     * @param string $reason
     */
    public function test_failures_that_may_pass_throw_so_the_task_is_retried(array $response, string $reason): void {
        $this->queue_graded();
        zohosync_stub::$responses = [$response];

        [$failure] = $this->run_queue(self::NOW);

        $this->assertInstanceOf(moodle_exception::class, $failure);
        $this->assertSame('deliveryretry', $failure->errorcode);
        $this->assertSame('Delivery of \core\event\user_graded event ' . self::EVENT_ID . " to the sync service failed ({$reason}); " .
            'the task will be retried.', $failure->getMessage());
        $this->assertCount(1, zohosync_stub::$queue);
        $this->assertSame([], zohosync_stub::$log);
    }

    /**
     * Answers after which the task completes without a retry.
     *
     * @return array[]
     */
    public function refused(): array {
        return [
            '400' => [400, 'The receiver could not use the event'],
            '401' => [401, 'Check the tenant id and the signing secret'],
            '403' => [403, 'The receiver could not use the event'],
            '404' => [404, 'Check the receiver URL'],
            '409' => [409, 'The receiver could not use the event'],
            '413' => [413, 'larger than the receiver accepts'],
            '415' => [415, 'The receiver could not use the event'],
            '422' => [422, 'The receiver could not use the event'],
            '301' => [301, 'The receiver URL redirects'],
            '302' => [302, 'The receiver URL redirects'],
        ];
    }

    /**
     * @dataProvider refused
     * @param int $status
     * @param string $hint
     */
    public function test_other_refusals_are_logged_and_not_retried(int $status, string $hint): void {
        $this->queue_graded();
        zohosync_stub::$responses = [['status' => $status, 'body' => '{"status":"rejected","reason":"objectid must be an integer, got \'1187x\'"}']];

        $this->assertSame([null], $this->run_queue(self::NOW));

        $this->assertSame([], zohosync_stub::$queue);
        $this->assertCount(1, zohosync_stub::$log);
        $this->assertStringStartsWith('mtrace: local_zohosync: the receiver refused \core\event\user_graded event ' .
            self::EVENT_ID . " with HTTP {$status}; it will not be retried. ", zohosync_stub::$log[0]);
        $this->assertStringContainsString($hint, zohosync_stub::$log[0]);
    }

    public function test_the_receivers_reason_is_shown_only_at_developer_level(): void {
        global $CFG;
        $CFG->debug = DEBUG_DEVELOPER;
        $this->queue_graded();
        zohosync_stub::$responses = [['status' => 422, 'body' => '{"status":"rejected","reason":"grade_item.id does not match other.itemid"}']];

        $this->run_queue(self::NOW);

        $this->assertSame(
            'debugging: local_zohosync: the receiver answered {"status":"rejected","reason":"grade_item.id does not match other.itemid"}',
            zohosync_stub::$log[1]
        );
    }

    /**
     * @return array[]
     */
    public function delivered(): array {
        return ['200' => [200], '201' => [201], '202' => [202], '204' => [204]];
    }

    /**
     * @dataProvider delivered
     * @param int $status
     */
    public function test_any_2xx_is_delivered(int $status): void {
        $this->queue_graded();
        zohosync_stub::$responses = [['status' => $status, 'body' => '']];
        $this->assertSame([null], $this->run_queue(self::NOW));
        $this->assertSame([], zohosync_stub::$queue);
    }

    /**
     * @return array[]
     */
    public function classifications(): array {
        return [
            [202, 0, '', send_event::DELIVERED],
            [200, 0, '', send_event::DELIVERED],
            [0, 0, '', send_event::RETRY],
            [0, 6, 'Could not resolve host', send_event::RETRY],
            [200, 18, 'transfer closed with outstanding read data remaining', send_event::RETRY],
            [500, 0, '', send_event::RETRY],
            [599, 0, '', send_event::RETRY],
            [408, 0, '', send_event::RETRY],
            [429, 0, '', send_event::RETRY],
            [400, 0, '', send_event::REFUSED],
            [401, 0, '', send_event::REFUSED],
            [422, 0, '', send_event::REFUSED],
            [499, 0, '', send_event::REFUSED],
            [307, 0, '', send_event::REFUSED],
        ];
    }

    /**
     * @dataProvider classifications
     * @param int $status
     * @param int $errno
     * @param string $error
     * @param string $expected
     */
    public function test_classify(int $status, int $errno, string $error, string $expected): void {
        $this->assertSame($expected, send_event::classify($status, $errno, $error));
    }

    public function test_a_plugin_unconfigured_since_the_event_was_queued_drops_it_with_a_reason(): void {
        $this->queue_graded();
        $this->configure(['secret' => '', 'receiverurl' => '']);

        $this->assertSame([null], $this->run_queue(self::NOW));

        $this->assertSame([], zohosync_stub::$requests);
        $this->assertSame(['mtrace: local_zohosync: \core\event\user_graded event ' . self::EVENT_ID . ' not sent, the plugin ' .
            'is not configured (the receiver URL is not set; the signing secret is not set); dropped.'], zohosync_stub::$log);
    }

    public function test_a_task_without_an_event_is_dropped(): void {
        $task = self::task_at(self::NOW);
        foreach (['', '{"event":"not an object"}', '{"queueid":0}', '{"queueid":"x"}', '{"queueid":-3}'] as $customdata) {
            $task->set_custom_data_as_string($customdata);
            $task->execute();
        }
        $this->assertSame([], zohosync_stub::$requests);
        $this->assertSame(array_fill(0, 5, 'mtrace: local_zohosync: a queued delivery holds no event; dropped.'),
            zohosync_stub::$log);
    }

    public function test_a_task_whose_payload_is_gone_is_dropped(): void {
        $this->queue_graded();
        zohosync_stub::$tables['local_zohosync_queue'] = [];
        zohosync_stub::$queue[] = ['classname' => '\\' . send_event::class, 'customdata' => '{"queueid":"41"}'];

        $this->assertSame([null, null], $this->run_queue(self::NOW));

        $this->assertSame([], zohosync_stub::$requests);
        $this->assertSame([
            'mtrace: local_zohosync: queued delivery 1 holds no event (its row is gone); dropped.',
            'mtrace: local_zohosync: queued delivery 41 holds no event (its row is gone); dropped.',
        ], zohosync_stub::$log);
    }

    public function test_a_payload_that_is_not_a_json_object_is_dropped_and_deleted(): void {
        $this->queue_graded();
        zohosync_stub::$tables['local_zohosync_queue']['1']->payload = '[1,2]';

        $this->assertSame([null], $this->run_queue(self::NOW));

        $this->assertSame([], zohosync_stub::$requests);
        $this->assertSame([], self::queue_rows());
        $this->assertSame(['mtrace: local_zohosync: queued delivery 1 holds no event (its row is gone); dropped.'],
            zohosync_stub::$log);
    }

    /**
     * @return array[]
     */
    public function final_answers(): array {
        return ['delivered' => [202], 'refused' => [422], 'redirected' => [302]];
    }

    /**
     * @dataProvider final_answers
     * @param int $status
     */
    public function test_the_payload_is_deleted_once_the_delivery_is_done_with(int $status): void {
        $this->queue_graded();
        $this->queued_payload(0);
        zohosync_stub::$responses = [['status' => $status, 'body' => '']];

        $this->assertSame([null], $this->run_queue(self::NOW));

        $this->assertSame([], self::queue_rows());
    }

    public function test_the_payload_is_kept_while_the_delivery_is_retried(): void {
        $this->queue_graded();
        $before = $this->queued_payload(0);
        zohosync_stub::$responses = [['status' => 503, 'body' => ''], ['status' => 0, 'errno' => 7, 'error' => 'refused'],
            ['status' => 202, 'body' => '']];

        $this->run_queue(self::NOW);
        $this->run_queue(self::NOW + 60);
        $this->assertSame($before, $this->queued_payload(0), 'the same payload, for the same body');
        $this->assertSame('{"queueid":1}', zohosync_stub::$queue[0]['customdata']);

        $this->assertSame([null], $this->run_queue(self::NOW + 180));
        $this->assertSame([], self::queue_rows());
        [$first, $second, $third] = zohosync_stub::$requests;
        $this->assertSame($first['body'], $second['body']);
        $this->assertSame($first['body'], $third['body']);
    }

    public function test_a_payload_dropped_because_the_plugin_is_unconfigured_is_deleted(): void {
        $this->queue_graded();
        $this->configure(['receiverurl' => '']);

        $this->run_queue(self::NOW);

        $this->assertSame([], self::queue_rows());
    }

    public function test_a_delivery_queued_before_the_queue_table_is_sent_as_it_was(): void {
        // Version 2026112800 put the payload in the custom data; the upgrade moves it, but a task the
        // upgrade did not see (or that Moodle re-reads) still delivers the same body.
        $this->queue_graded();
        $payload = $this->queued_payload(0);
        zohosync_stub::$queue = [['classname' => '\\' . send_event::class,
            'customdata' => json_encode(['event' => $payload], JSON_THROW_ON_ERROR)]];
        zohosync_stub::$tables['local_zohosync_queue'] = [];

        $this->assertSame([null], $this->run_queue(self::NOW));

        $this->assertSame(json_encode($payload), zohosync_stub::$requests[0]['body']);
        $this->assertSame(['mtrace: local_zohosync: delivered \core\event\user_graded event ' . self::EVENT_ID . ' (HTTP 202).'],
            zohosync_stub::$log);
    }

    public function test_the_purge_deletes_only_old_payloads_no_task_refers_to(): void {
        global $DB;
        $this->queue_graded();                              // Row 1, its task queued.
        $orphan = $DB->insert_record('local_zohosync_queue', (object) ['payload' => '{}', 'timecreated' => self::NOW - 90000]);
        $young = $DB->insert_record('local_zohosync_queue', (object) ['payload' => '{}', 'timecreated' => self::NOW - 600]);
        zohosync_stub::$tables['local_zohosync_queue']['1']->timecreated = self::NOW - 90000;
        zohosync_stub::$queue[] = ['classname' => '\\some\\other_task', 'customdata' => '{"queueid":' . $orphan . '}'];

        $this->assertSame(1, \local_zohosync\queue::purge_orphans(self::NOW));

        $this->assertSame(['1', (string) $young], array_map('strval', array_keys(self::queue_rows())));
    }

    public function test_the_purge_task_logs_a_count_only(): void {
        global $DB;
        $DB->insert_record('local_zohosync_queue', (object) ['payload' => '{"relateduserid":57}', 'timecreated' => 1]);
        $task = new \local_zohosync\task\purge_queue();
        $this->assertSame('Delete queued Zoho sync events no delivery task refers to', $task->get_name());

        $task->execute();

        $this->assertSame([], self::queue_rows());
        $this->assertSame(['mtrace: local_zohosync: deleted 1 queued payload(s) no delivery task refers to.'], zohosync_stub::$log);
    }

    public function test_log_labels_never_carry_anything_but_a_name_and_an_id(): void {
        $task = self::task_at(self::NOW);
        $task->set_custom_data_as_string('{"event":{"eventname":"<b>57 87.50</b>","event_id":"secret value"}}');
        $task->execute();
        $this->assertSame(['mtrace: local_zohosync: delivered (unnamed) event (no id) (HTTP 202).'], zohosync_stub::$log);
    }

    public function test_the_task_has_a_name(): void {
        $this->assertSame('Send an event to the Zoho sync service', (new send_event())->get_name());
    }

    /**
     * Every path through the task, at developer debugging: the secret is never in the logs, the
     * exceptions or their traces.
     */
    public function test_the_secret_never_appears_in_logged_output(): void {
        global $CFG;
        $CFG->debug = DEBUG_DEVELOPER;
        $responses = [];
        foreach ($this->retried() as [$response]) {
            $responses[] = $response;
        }
        foreach ($this->refused() as [$status]) {
            $responses[] = ['status' => $status, 'body' => '{"status":"rejected","reason":"authentication failed"}'];
        }
        $responses[] = ['status' => 202, 'body' => '{"status":"accepted"}'];

        $seen = [];
        foreach ($responses as $response) {
            zohosync_stub::$queue = [];
            $this->queue_graded();
            zohosync_stub::$responses = [$response];
            foreach ($this->run_queue(self::NOW) as $failure) {
                if ($failure !== null) {
                    $seen[] = $failure->getMessage() . "\n" . $failure->getTraceAsString() . "\n" . print_r($failure->a, true);
                }
            }
        }
        $this->queue_graded();
        $this->configure(['receiverurl' => '']);
        $this->run_queue(self::NOW);

        $seen[] = zohosync_stub::logged();
        $everything = implode("\n", $seen);
        $this->assertNotSame('', $everything);
        $this->assertStringNotContainsString(self::SECRET, $everything);
        $this->assertStringNotContainsString(substr(self::SECRET, -16), $everything);
    }

    /**
     * Above developer level, the logs name the event and its id, never its data.
     */
    public function test_no_event_data_is_logged_above_debug_level(): void {
        foreach ([['status' => 202], ['status' => 401], ['status' => 422], ['status' => 302]] as $response) {
            zohosync_stub::$queue = [];
            $this->queue_graded();
            zohosync_stub::$responses = [$response + ['body' => '{"reason":"relateduserid 57, finalgrade 87.50000"}']];
            $this->run_queue(self::NOW);
        }
        $logged = zohosync_stub::logged();
        $this->assertCount(4, zohosync_stub::$log);
        foreach (['87.5', '1187', 'Assignment 1', 'assign', 'finalgrade', 'relateduserid', 'sync.example.org', 'demo_school'] as $data) {
            $this->assertStringNotContainsString($data, $logged);
        }
        $this->assertStringNotContainsString('57', str_replace(self::EVENT_ID, '', $logged));
    }
}
