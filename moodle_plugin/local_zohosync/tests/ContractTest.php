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
 * The contract with the receiver, both ways.
 *
 * 1. From the event, secret and timestamp of the receiver's own fixture
 *    (sync_pipelines_tests/webhooks/fixtures/moodle_user_graded.json), the plugin sends exactly that
 *    fixture's body and headers.
 * 2. The plugin's deliveries of every forwarded event (and a retried one) are recorded in
 *    tests/fixtures/signed_deliveries.json, which sync_pipelines_tests/webhooks/test_plugin_contract.py
 *    feeds to the receiver. This test fails when the plugin would now send something else than the
 *    committed file says; after a deliberate change, regenerate it with
 *    ZOHOSYNC_WRITE_FIXTURE=1 make plugin-test, and run the Python test.
 *
 * @package    local_zohosync
 * @copyright  2026 sync_pipelines contributors
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

use local_zohosync\observer;

/**
 * @covers \local_zohosync\observer
 * @covers \local_zohosync\task\send_event
 * @covers \local_zohosync\signer
 */
final class ContractTest extends ZohosyncTestCase {

    /** @var string The receiver's fixture. */
    private const SHARED_FIXTURE = self::REPO_ROOT . '/sync_pipelines_tests/webhooks/fixtures/moodle_user_graded.json';

    /** @var string The plugin's fixture, for the Python side. */
    private const PLUGIN_FIXTURE = __DIR__ . '/fixtures/signed_deliveries.json';

    public function test_it_sends_exactly_the_receivers_recorded_delivery(): void {
        $this->assertFileExists(self::SHARED_FIXTURE);
        $fixture = json_decode(file_get_contents(self::SHARED_FIXTURE), true, 512, JSON_THROW_ON_ERROR);
        $this->configure(['tenant' => $fixture['tenant'], 'secret' => $fixture['secret']]);
        $this->grade_items(self::assignment_item());
        zohosync_stub::$uuids = [$fixture['expected']['event_id']];

        observer::queue_delivery(self::event(self::user_graded_data()));
        $this->assertSame([null], $this->run_queue($fixture['timestamp']));

        [$request] = zohosync_stub::$requests;
        $this->assertSame(self::RECEIVER . $fixture['path'], $request['url']);
        $this->assertSame($fixture['body'], $request['body']);
        $this->assertSame($fixture['headers'], self::headers_of($request));
    }

    public function test_the_recorded_deliveries_are_what_the_plugin_sends(): void {
        $document = [
            'description' => 'Requests local_zohosync sends to POST /v1/webhooks/moodle/{tenant}, captured from its send_event ' .
                'task (moodle_plugin/local_zohosync/tests/ContractTest.php). body is the exact request body; the headers ' .
                'are signed with secret at timestamp. The retried enrolment was answered 503 at its first attempt and sent ' .
                'again, same body, signed anew. sync_pipelines_tests/webhooks/test_plugin_contract.py checks that the ' .
                'receiver accepts each one. Regenerate with: ZOHOSYNC_WRITE_FIXTURE=1 make plugin-test',
            'tenant' => self::TENANT,
            'secret' => self::SECRET,
            'deliveries' => $this->deliveries(),
        ];
        $json = json_encode($document, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_THROW_ON_ERROR) .
            "\n";

        if (getenv('ZOHOSYNC_WRITE_FIXTURE') === '1') {
            file_put_contents(self::PLUGIN_FIXTURE, $json);
        }
        $this->assertFileExists(self::PLUGIN_FIXTURE);
        $this->assertSame(file_get_contents(self::PLUGIN_FIXTURE), $json,
            'the plugin no longer sends what tests/fixtures/signed_deliveries.json records: if that is intended, ' .
            'regenerate it with ZOHOSYNC_WRITE_FIXTURE=1 make plugin-test and run the Python contract test');
    }

    /**
     * Deliver each event through the observer and the task, and record the requests.
     *
     * @return array[]
     */
    private function deliveries(): array {
        $this->grade_items(self::assignment_item(), self::course_total_item());
        $scenarios = [
            ['user_created', self::user_created_data(), '3f1d0c2a-8e4b-4c6d-9a7f-1b2c3d4e5f60'],
            ['user_updated', self::user_updated_data(), '4a2e1d3b-9f5c-4d7e-8b8a-2c3d4e5f6071'],
            ['user_enrolment_created', self::user_enrolment_created_data(), '5b3f2e4c-a06d-4e8f-9c9b-3d4e5f607182'],
            ['user_enrolment_deleted', self::user_enrolment_deleted_data(), '6c403f5d-b17e-4f90-8dac-4e5f60718293'],
            ['user_enrolment_updated', self::user_enrolment_updated_data(), '2b7e9c41-6d3a-4f58-a1e2-7c9d0b3e5f14'],
            ['user_graded', self::user_graded_data(), '9f0c6a52-3b7e-4f1a-9d44-2c8e5b7a1d03'],
            ['user_graded_course_total', self::course_total_graded_data(), '7d5140a6-c28f-4a01-9ebd-5f60718293a4'],
            ['course_updated', self::course_updated_data(), '3c8fad52-7e4b-4a69-b2f3-8d0e1c4f6025'],
        ];
        $deliveries = [];
        foreach ($scenarios as [$name, $data, $uuid]) {
            zohosync_stub::$requests = [];
            zohosync_stub::$uuids = [$uuid];
            observer::queue_delivery(self::event($data));
            $this->assertSame([null], $this->run_queue($data['timecreated'] + 5));
            $deliveries[] = self::record($name, 1, 202, zohosync_stub::$requests[0], $data['timecreated'] + 5);
        }

        // A delivery answered 503, retried a minute later.
        zohosync_stub::$requests = [];
        zohosync_stub::$uuids = ['8e6251b7-d390-4b12-8fce-60718293a4b5'];
        zohosync_stub::$responses = [['status' => 503, 'body' => '{"status":"rejected"}'], ['status' => 202, 'body' => '']];
        $data = array_replace(self::user_enrolment_created_data(), ['objectid' => 902, 'relateduserid' => 58, 'timecreated' => 1769336400]);
        observer::queue_delivery(self::event($data));
        [$failure] = $this->run_queue(1769336405);
        $this->assertInstanceOf(moodle_exception::class, $failure);
        $this->assertSame([null], $this->run_queue(1769336465));
        $deliveries[] = self::record('user_enrolment_created_retried', 1, 503, zohosync_stub::$requests[0], 1769336405);
        $deliveries[] = self::record('user_enrolment_created_retried', 2, 202, zohosync_stub::$requests[1], 1769336465);
        return $deliveries;
    }

    /**
     * One captured request, as the fixture records it.
     *
     * @param string $name
     * @param int $attempt
     * @param int $answered the status the stub answered.
     * @param array $request an entry of zohosync_stub::$requests.
     * @param int $timestamp
     * @return array
     */
    private static function record(string $name, int $attempt, int $answered, array $request, int $timestamp): array {
        $headers = self::headers_of($request);
        self::assertSame((string) $timestamp, $headers['X-Sync-Timestamp']);
        return [
            'name' => $name,
            'attempt' => $attempt,
            'answered' => $answered,
            'timestamp' => $timestamp,
            'url' => $request['url'],
            'path' => parse_url($request['url'], PHP_URL_PATH),
            'headers' => $headers,
            'body' => $request['body'],
        ];
    }
}
