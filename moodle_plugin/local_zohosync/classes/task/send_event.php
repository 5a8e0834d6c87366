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

namespace local_zohosync\task;

use local_zohosync\config;
use local_zohosync\queue;
use local_zohosync\signer;

/**
 * Delivers one queued event to the sync service: POST <receiver>/v1/webhooks/moodle/<tenant>.
 *
 * The body is the queued payload as JSON (json_encode's default escaping, as the receiver's fixtures
 * record it), signed at the time of the attempt ({@see signer}). What the answer means:
 *
 * - 2xx: delivered (the receiver answers 202, also for a redelivery it had already stored).
 * - a network error (no answer, timeout, blocked URL), 5xx, 408 or 429: the task throws, and Moodle's
 *   task API retries it later with its backoff (a failed adhoc task waits 1 minute, then twice as
 *   long after each failure, up to 24 hours; Moodle 4.4+ gives up after 12 attempts).
 * - anything else (a 3xx, or a 4xx such as 400, 401, 404, 413, 415, 422): the receiver will not take
 *   this event however often it is sent. The status is logged and the task completes (no retry).
 *
 * Logs (mtrace) name the event type, the event id and the HTTP status; never the body, the event's
 * data, the URL or the secret. The receiver's answer to a refused delivery, which may quote event
 * data, is shown only as a developer-level debugging message.
 *
 * The task's custom data, which Moodle's adhoc-task runner prints in the task log, is only the id of
 * the payload's row in local_zohosync_queue ({"queueid": 12}, see {@see queue}); the row is deleted
 * once the delivery is done with (delivered, refused or dropped), and kept while it is retried.
 *
 * @package    local_zohosync
 * @copyright  2026 sync_pipelines contributors
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
class send_event extends \core\task\adhoc_task {

    /** @var string Outcome: the receiver took the event. */
    public const DELIVERED = 'delivered';

    /** @var string Outcome: try again later. */
    public const RETRY = 'retry';

    /** @var string Outcome: the receiver will not take it; do not try again. */
    public const REFUSED = 'refused';

    /**
     * A task delivering a payload built by {@see \local_zohosync\observer::payload()}.
     *
     * The payload is stored in local_zohosync_queue; the task's custom data is only the row's id. A
     * payload that JSON cannot hold (text that is not UTF-8) is refused here: nothing is stored.
     *
     * @param array $payload
     * @return self
     * @throws \JsonException
     */
    public static function for_payload(array $payload): self {
        $task = new self();
        $task->set_custom_data(['queueid' => queue::store($payload)]);
        return $task;
    }

    /**
     * The queue row a task's custom data names.
     *
     * @param mixed $data the decoded custom data.
     * @return int|null null when it names none (e.g. a delivery queued before the queue table existed).
     */
    public static function queue_id($data): ?int {
        if (!is_object($data) || !isset($data->queueid)) {
            return null;
        }
        $id = $data->queueid;
        if (is_int($id) || (is_string($id) && ctype_digit($id))) {
            return (int) $id > 0 ? (int) $id : null;
        }
        return null;
    }

    /**
     * The task's name, shown to administrators.
     *
     * @return string
     */
    public function get_name() {
        return get_string('tasksendevent', 'local_zohosync');
    }

    /**
     * Deliver the event.
     *
     * Throws (so that the task is retried) only after a failure worth retrying. The exception is
     * created here, in a method that takes no arguments, so that its trace holds neither the
     * secret nor the body.
     *
     * @return void
     * @throws \moodle_exception when the delivery should be retried.
     */
    public function execute() {
        global $CFG;

        $data = $this->get_custom_data();
        $queueid = self::queue_id($data);
        if ($queueid !== null) {
            $event = queue::load($queueid);
            if ($event === null) {
                mtrace("local_zohosync: queued delivery {$queueid} holds no event (its row is gone); dropped.");
                queue::delete($queueid);
                return;
            }
        } else {
            // A delivery queued before version 2026120700 that the upgrade did not move carries the event itself.
            $event = is_object($data) && isset($data->event) && is_object($data->event) ? $data->event : null;
            if ($event === null) {
                mtrace('local_zohosync: a queued delivery holds no event; dropped.');
                return;
            }
        }
        $label = self::label($event);

        $config = config::load();
        $problems = $config->problems();
        if ($problems) {
            mtrace("local_zohosync: {$label} not sent, the plugin is not configured (" . implode('; ', $problems) .
                '); dropped.');
            self::done($queueid);
            return;
        }

        try {
            $body = json_encode($event, JSON_THROW_ON_ERROR);
        } catch (\JsonException $e) {
            mtrace("local_zohosync: {$label} cannot be encoded as JSON ({$e->getMessage()}); dropped.");
            self::done($queueid);
            return;
        }

        require_once($CFG->libdir . '/filelib.php');
        $curl = new \curl();
        $curl->setHeader(self::header_lines(signer::headers($config->secret, $body, $this->now())));
        $answer = $curl->post($config->endpoint(), $body, [
            'CURLOPT_TIMEOUT' => $config->timeout,
            'CURLOPT_CONNECTTIMEOUT' => min($config->timeout, config::CONNECT_TIMEOUT),
            // A redirect would repeat the signed POST elsewhere: the receiver URL must be the final one.
            'CURLOPT_FOLLOWLOCATION' => 0,
        ]);
        $info = $curl->get_info();
        $status = is_array($info) && isset($info['http_code']) ? (int) $info['http_code'] : 0;
        $errno = (int) $curl->get_errno();
        $error = is_string($curl->error ?? null) ? $curl->error : '';

        $outcome = self::classify($status, $errno, $error);
        if ($outcome === self::DELIVERED) {
            self::done($queueid);
            mtrace("local_zohosync: delivered {$label} (HTTP {$status}).");
            return;
        }
        if ($outcome === self::REFUSED) {
            self::done($queueid);
            mtrace("local_zohosync: the receiver refused {$label} with HTTP {$status}; it will not be retried. " .
                self::hint($status));
            debugging('local_zohosync: the receiver answered ' . substr(is_string($answer) ? $answer : '', 0, 500),
                DEBUG_DEVELOPER);
            return;
        }
        if ($errno !== 0) {
            // cURL's generic text for the number: its own message names the host.
            $reason = "no answer (cURL error {$errno}: " . curl_strerror($errno) . ')';
        } else if ($status === 0) {
            // Moodle's message when its cURL security blocks the URL ("The URL is blocked.").
            $reason = 'no answer' . ($error !== '' ? ': ' . substr($error, 0, 100) : '');
        } else {
            $reason = "HTTP {$status}";
        }
        throw new \moodle_exception('deliveryretry', 'local_zohosync', '', (object) [
            'event' => $label,
            'reason' => $reason,
        ]);
    }

    /**
     * What an attempt's result means.
     *
     * @param int $status the HTTP status, 0 when there was no answer.
     * @param int $errno cURL's error number, 0 when the transfer worked.
     * @param string $error cURL's error text (also set when Moodle blocks the URL, without an errno).
     * @return string {@see self::DELIVERED}, {@see self::RETRY} or {@see self::REFUSED}.
     */
    public static function classify(int $status, int $errno, string $error = ''): string {
        if ($errno !== 0 || $status === 0) {
            return self::RETRY;
        }
        if ($status >= 200 && $status < 300) {
            return $error === '' ? self::DELIVERED : self::RETRY;
        }
        if ($status >= 500 || $status === 408 || $status === 429) {
            return self::RETRY;
        }
        return self::REFUSED;
    }

    /**
     * The delivery is done with (delivered, refused or dropped): delete its payload.
     *
     * @param int|null $queueid null for a delivery that carried its event in the custom data.
     */
    private static function done(?int $queueid): void {
        if ($queueid !== null) {
            queue::delete($queueid);
        }
    }

    /**
     * Unix seconds now: the time the attempt is signed with.
     *
     * @return int
     */
    protected function now(): int {
        return time();
    }

    /**
     * "Name: value" lines for curl::setHeader().
     *
     * @param array<string, string> $headers
     * @return string[]
     */
    private static function header_lines(array $headers): array {
        $lines = [];
        foreach ($headers as $name => $value) {
            $lines[] = $name . ': ' . $value;
        }
        return $lines;
    }

    /**
     * "<eventname> event <event id>", safe to log: only the characters such names and ids use.
     *
     * @param \stdClass $event the queued payload.
     * @return string
     */
    private static function label(\stdClass $event): string {
        $name = isset($event->eventname) && is_string($event->eventname) ? $event->eventname : '';
        $name = preg_match('/^[A-Za-z0-9_\\\\]{1,100}$/', $name) ? $name : '(unnamed)';
        $id = isset($event->event_id) && is_string($event->event_id) ? $event->event_id : '';
        $id = preg_match('/^[A-Za-z0-9._-]{1,128}$/', $id) ? $id : '(no id)';
        return "{$name} event {$id}";
    }

    /**
     * What an administrator should check after a refusal.
     *
     * @param int $status
     * @return string
     */
    private static function hint(int $status): string {
        if ($status >= 300 && $status < 400) {
            return 'The receiver URL redirects: set it to the final URL (https, no trailing path).';
        }
        switch ($status) {
            case 401:
                return 'Check the tenant id and the signing secret (the value of the tenant\'s moodle.webhook_secret_env ' .
                    'on the sync service), and that this server\'s clock is right (within 300 s).';
            case 404:
                return 'Check the receiver URL: it should be the sync service\'s base URL.';
            case 413:
                return 'The event is larger than the receiver accepts.';
            default:
                return 'The receiver could not use the event; its log says why.';
        }
    }
}
