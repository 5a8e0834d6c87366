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
 * The payloads of queued deliveries, in the plugin's table local_zohosync_queue.
 *
 * Moodle's adhoc-task runner prints a task's custom data in the task log, so a delivery task carries
 * only the id of its row here ({"queueid": 12}); the payload (the event's data: user ids, grades)
 * stays in this table until the delivery is done with (delivered, refused or dropped), and is then
 * deleted. A row whose task is gone (Moodle 4.4+ removes tasks whose attempts are used up once
 * task_adhoc_failed_retention has passed; an administrator may delete tasks) is deleted by
 * {@see task\purge_queue} once it is older than {@see self::ORPHAN_AGE}.
 *
 * @package    local_zohosync
 * @copyright  2026 sync_pipelines contributors
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
final class queue {

    /** @var string The table. */
    public const TABLE = 'local_zohosync_queue';

    /** @var int Seconds a row without a task is kept (an observer stores the row just before it queues the task). */
    public const ORPHAN_AGE = 86400;

    /**
     * Store a payload; answer the id its task carries.
     *
     * @param array $payload the body of the delivery ({@see observer::payload()}).
     * @return int the row's id.
     * @throws \JsonException when JSON cannot hold the payload (text that is not UTF-8): nothing is stored.
     */
    public static function store(array $payload): int {
        global $DB;
        $json = json_encode($payload, JSON_THROW_ON_ERROR);
        return (int) $DB->insert_record(self::TABLE, (object) ['payload' => $json, 'timecreated' => time()]);
    }

    /**
     * The payload of a row, decoded to objects as a task's custom data used to be.
     *
     * @param int $id
     * @return \stdClass|null null when the row is gone or holds no JSON object.
     */
    public static function load(int $id): ?\stdClass {
        global $DB;
        $record = $DB->get_record(self::TABLE, ['id' => $id], 'id, payload', IGNORE_MISSING);
        if (!$record) {
            return null;
        }
        $payload = json_decode((string) $record->payload);
        return is_object($payload) ? $payload : null;
    }

    /**
     * Delete a row (the delivery is done with).
     *
     * @param int $id
     */
    public static function delete(int $id): void {
        global $DB;
        $DB->delete_records(self::TABLE, ['id' => $id]);
    }

    /**
     * Delete the rows no queued delivery task refers to, once older than {@see self::ORPHAN_AGE}.
     *
     * @param int $now Unix time.
     * @return int how many rows were deleted.
     */
    public static function purge_orphans(int $now): int {
        global $DB;
        $referenced = [];
        $customdata = $DB->get_fieldset_select('task_adhoc', 'customdata', 'classname = ?',
            ['\\' . task\send_event::class]);
        foreach ($customdata as $json) {
            $id = task\send_event::queue_id(json_decode((string) $json));
            if ($id !== null) {
                $referenced[$id] = true;
            }
        }
        $old = $DB->get_fieldset_select(self::TABLE, 'id', 'timecreated < ?', [$now - self::ORPHAN_AGE]);
        $orphans = array_values(array_filter(array_map('intval', $old), static function (int $id) use ($referenced): bool {
            return !isset($referenced[$id]);
        }));
        if ($orphans) {
            $DB->delete_records_list(self::TABLE, 'id', $orphans);
        }
        return count($orphans);
    }
}
