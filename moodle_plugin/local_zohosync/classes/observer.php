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

namespace local_zohosync;

/**
 * Observes the forwarded events and queues their delivery; it never touches the network.
 *
 * Registered in db/events.php with 'internal' => false, so it runs after the change has committed.
 * For an enabled event, on a configured site, it stores the payload of one delivery (the event's
 * get_data(), an event id: a random UUID, the same on every retry of the delivery, so the receiver
 * can tell a redelivery from a new event; and, for user_graded, the grade item, looked up now while
 * it certainly exists) in local_zohosync_queue ({@see queue}) and queues one {@see task\send_event}
 * whose custom data is only the row's id. Then it returns: cron sends the task.
 *
 * @package    local_zohosync
 * @copyright  2026 sync_pipelines contributors
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
final class observer {

    /** @var string The grade_items columns sent with user_graded, in this order. */
    private const GRADE_ITEM_FIELDS = 'id, itemtype, itemmodule, iteminstance, itemname, grademax';

    /**
     * Queue the delivery of an event (the callback of every observer in db/events.php).
     *
     * @param \core\event\base $event
     * @return void
     */
    public static function queue_delivery(\core\event\base $event): void {
        $data = $event->get_data();
        $eventname = (string) ($data['eventname'] ?? '');
        $key = config::event_key($eventname);
        if ($key === null) {
            return;
        }
        try {
            $config = config::load();
            if (!$config->is_enabled($key) || !$config->is_complete()) {
                return;
            }
            $task = task\send_event::for_payload(self::payload($data));
            try {
                \core\task\manager::queue_adhoc_task($task);
            } catch (\Throwable $e) {
                // No task will come for the stored payload: do not keep it.
                $queueid = task\send_event::queue_id($task->get_custom_data());
                if ($queueid !== null) {
                    queue::delete($queueid);
                }
                throw $e;
            }
        } catch (\Throwable $e) {
            // The user's action has already committed: never let the forwarding undo or interrupt it.
            // The message names the event type only: no event data, no settings.
            debugging('local_zohosync: could not queue the delivery of a ' . $eventname . ' event (' .
                get_class($e) . ')', DEBUG_NORMAL);
        }
    }

    /**
     * The body of a delivery: get_data(), then event_id, origin, then (user_graded only) grade_item.
     *
     * @param array $data the event's get_data().
     * @return array
     */
    public static function payload(array $data): array {
        $payload = $data;
        $payload['event_id'] = \core\uuid::generate();
        $payload['origin'] = self::origin();
        if (config::event_key((string) $data['eventname']) === 'user_graded') {
            $other = $data['other'] ?? null;
            $itemid = is_array($other) && isset($other['itemid']) ? $other['itemid'] : null;
            $payload['grade_item'] = self::grade_item($itemid);
        }
        return $payload;
    }

    /**
     * Where the event's action came from: 'ws' (a web-service call, such as the pipeline's own
     * writes), 'cli' (a CLI script or cron) or 'web' (a person in the browser).
     *
     * With userid, it lets the receiver tell the echo of the pipeline's own write (a web-service
     * call by the pipeline's user) from a change staff made by hand, even with the same account.
     *
     * @return string
     */
    public static function origin(): string {
        if (defined('WS_SERVER') && WS_SERVER) {
            return 'ws';
        }
        if (defined('CLI_SCRIPT') && CLI_SCRIPT) {
            return 'cli';
        }
        return 'web';
    }

    /**
     * The grade item a user_graded event names, or null if it is gone.
     *
     * is_course_total tells the course total (itemtype 'course') from an activity or manual item:
     * one grading action can raise user_graded for both, and only the item itself should be counted.
     *
     * @param int|string|null $itemid other['itemid'] of the event.
     * @return array|null id, itemtype, itemmodule, iteminstance, itemname, grademax, is_course_total.
     */
    private static function grade_item($itemid): ?array {
        global $DB;
        if ($itemid === null || $itemid === '' || !is_numeric($itemid)) {
            return null;
        }
        $item = $DB->get_record('grade_items', ['id' => $itemid], self::GRADE_ITEM_FIELDS, IGNORE_MISSING);
        if (!$item) {
            return null;
        }
        return [
            'id' => $item->id,
            'itemtype' => $item->itemtype,
            'itemmodule' => $item->itemmodule,
            'iteminstance' => $item->iteminstance,
            'itemname' => $item->itemname,
            'grademax' => $item->grademax,
            'is_course_total' => $item->itemtype === 'course',
        ];
    }
}
