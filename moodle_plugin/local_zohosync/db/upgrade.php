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
 * Upgrade steps of local_zohosync.
 *
 * @package    local_zohosync
 * @copyright  2026 sync_pipelines contributors
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

/**
 * Upgrade local_zohosync from $oldversion.
 *
 * @param int $oldversion the version installed.
 * @return bool
 */
function xmldb_local_zohosync_upgrade($oldversion) {
    global $DB;
    $dbman = $DB->get_manager();

    if ($oldversion < 2026120700) {
        // The queue table: a delivery task now carries only the id of its payload's row, so that the
        // task log (which prints a task's custom data) holds no event data.
        $table = new xmldb_table('local_zohosync_queue');
        $table->add_field('id', XMLDB_TYPE_INTEGER, '10', null, XMLDB_NOTNULL, XMLDB_SEQUENCE, null);
        $table->add_field('payload', XMLDB_TYPE_TEXT, null, null, XMLDB_NOTNULL, null, null);
        $table->add_field('timecreated', XMLDB_TYPE_INTEGER, '10', null, XMLDB_NOTNULL, null, '0');
        $table->add_key('primary', XMLDB_KEY_PRIMARY, ['id']);
        $table->add_index('timecreated', XMLDB_INDEX_NOTUNIQUE, ['timecreated']);
        if (!$dbman->table_exists($table)) {
            $dbman->create_table($table);
        }

        // Deliveries queued before the upgrade carry their event as custom data: move each event to
        // the table and leave the task only the row's id (same body, same event id when it is sent).
        $tasks = $DB->get_recordset('task_adhoc', ['classname' => '\local_zohosync\task\send_event'], 'id', 'id, customdata');
        foreach ($tasks as $task) {
            $data = json_decode((string) $task->customdata);
            if (!is_object($data) || !isset($data->event) || !is_object($data->event)) {
                continue;
            }
            $payload = json_encode($data->event);
            if ($payload === false) {
                continue;
            }
            $queueid = $DB->insert_record('local_zohosync_queue', (object) ['payload' => $payload, 'timecreated' => time()]);
            $DB->set_field('task_adhoc', 'customdata', json_encode(['queueid' => (int) $queueid]), ['id' => $task->id]);
        }
        $tasks->close();

        upgrade_plugin_savepoint(true, 2026120700, 'local', 'zohosync');
    }

    if ($oldversion < 2026120701) {
        // 0.3.0 forwards user_enrolment_updated and course_updated: tick them in the saved setting
        // (a default reaches only a setting never saved), as every event is ticked on a new site.
        \local_zohosync\config::tick_new_events(\local_zohosync\config::EVENTS_ADDED[2026120701]);

        upgrade_plugin_savepoint(true, 2026120701, 'local', 'zohosync');
    }

    return true;
}
