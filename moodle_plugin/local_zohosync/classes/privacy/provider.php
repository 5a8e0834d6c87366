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

namespace local_zohosync\privacy;

use core_privacy\local\metadata\collection;
use core_privacy\local\request\approved_contextlist;
use core_privacy\local\request\approved_userlist;
use core_privacy\local\request\contextlist;
use core_privacy\local\request\userlist;

/**
 * Privacy API: the plugin sends personal data to an external system, and keeps it in Moodle only
 * while a delivery waits.
 *
 * The metadata declares the external location (the school's sync service, which keeps its CRM in
 * step) and every field sent to it, and the table local_zohosync_queue, where the body of each
 * queued delivery waits until it is delivered (normally within a minute), refused, or dropped; it is
 * then deleted (a payload whose task is gone is deleted by the daily task purge_queue). The plugin
 * keeps nothing else: no files, no preferences, nothing once a delivery is done with. The request
 * methods find no contexts and no users: a queued delivery is transient, like the adhoc task that
 * carried its data before the table existed. Data already sent is held by the sync service and the
 * CRM, under the school's own processes. Core counts a component compliant when it implements both
 * a metadata provider and a request provider, hence the request provider.
 *
 * @package    local_zohosync
 * @copyright  2026 sync_pipelines contributors
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
class provider implements
        \core_privacy\local\metadata\provider,
        \core_privacy\local\request\core_userlist_provider,
        \core_privacy\local\request\plugin\provider {

    /**
     * Describe what waits in the queue table and what is sent to the sync service.
     *
     * @param collection $collection
     * @return collection
     */
    public static function get_metadata(collection $collection): collection {
        $collection->add_database_table('local_zohosync_queue', [
            'payload' => 'privacy:metadata:local_zohosync_queue:payload',
            'timecreated' => 'privacy:metadata:local_zohosync_queue:timecreated',
        ], 'privacy:metadata:local_zohosync_queue');
        $collection->add_external_location_link('zohosync_receiver', [
            'eventname' => 'privacy:metadata:zohosync_receiver:eventname',
            'userid' => 'privacy:metadata:zohosync_receiver:userid',
            'relateduserid' => 'privacy:metadata:zohosync_receiver:relateduserid',
            'courseid' => 'privacy:metadata:zohosync_receiver:courseid',
            'objectid' => 'privacy:metadata:zohosync_receiver:objectid',
            'other' => 'privacy:metadata:zohosync_receiver:other',
            'timecreated' => 'privacy:metadata:zohosync_receiver:timecreated',
            'grade_item' => 'privacy:metadata:zohosync_receiver:grade_item',
        ], 'privacy:metadata:zohosync_receiver');
        return $collection;
    }

    /**
     * No context holds data of this plugin.
     *
     * @param int $userid
     * @return contextlist an empty list.
     */
    public static function get_contexts_for_userid(int $userid): contextlist {
        return new contextlist();
    }

    /**
     * Nothing to export: the plugin keeps personal data only in transient queued deliveries.
     *
     * @param approved_contextlist $contextlist
     */
    public static function export_user_data(approved_contextlist $contextlist) {
    }

    /**
     * Nothing to delete: a queued delivery is deleted once it is done with.
     *
     * @param \context $context
     */
    public static function delete_data_for_all_users_in_context(\context $context) {
    }

    /**
     * Nothing to delete: a queued delivery is deleted once it is done with.
     *
     * @param approved_contextlist $contextlist
     */
    public static function delete_data_for_user(approved_contextlist $contextlist) {
    }

    /**
     * No user has data of this plugin in any context.
     *
     * @param userlist $userlist
     */
    public static function get_users_in_context(userlist $userlist) {
    }

    /**
     * Nothing to delete: a queued delivery is deleted once it is done with.
     *
     * @param approved_userlist $userlist
     */
    public static function delete_data_for_users(approved_userlist $userlist) {
    }
}
