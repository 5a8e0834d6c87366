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
 * English strings of local_zohosync.
 *
 * @package    local_zohosync
 * @copyright  2026 sync_pipelines contributors
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

defined('MOODLE_INTERNAL') || die();

$string['deliveryretry'] = 'Delivery of {$a->event} to the sync service failed ({$a->reason}); the task will be retried.';
$string['event_course_updated'] = 'Course updated (renamed, moved, hidden or its dates changed)';
$string['event_user_created'] = 'User created';
$string['event_user_enrolment_created'] = 'User enrolled in a course';
$string['event_user_enrolment_deleted'] = 'User unenrolled from a course';
$string['event_user_enrolment_updated'] = 'User enrolment updated (suspended, re-activated or its dates changed)';
$string['event_user_graded'] = 'User graded';
$string['event_user_updated'] = 'User updated';
$string['events'] = 'Events to send';
$string['events_desc'] = 'The events the sync service is told about. Each is queued when it happens and sent by cron shortly after; a delivery that fails for a reason that may pass (no answer, a server error, 408 or 429) is retried by Moodle\'s task system.';
$string['pluginname'] = 'Zoho sync webhooks';
$string['privacy:metadata:local_zohosync_queue'] = 'Each event waiting to be sent to the school\'s sync service, kept only until it is delivered (normally within a minute), refused, or its retries are used up.';
$string['privacy:metadata:local_zohosync_queue:payload'] = 'What will be sent: the same fields as are sent to the sync service (the user who made the change, the user concerned, the course, the record, details such as the final grade, the time and the grade item).';
$string['privacy:metadata:local_zohosync_queue:timecreated'] = 'When the event was queued.';
$string['privacy:metadata:zohosync_receiver'] = 'To keep the school\'s CRM (Zoho) in step with Moodle, records of account, enrolment, grading and course events are sent to the school\'s sync service. Until it is sent, each record waits in the plugin\'s queue table.';
$string['privacy:metadata:zohosync_receiver:courseid'] = 'The course the event happened in.';
$string['privacy:metadata:zohosync_receiver:eventname'] = 'What happened: a user account was created or updated, a user was enrolled or unenrolled, a user\'s enrolment was changed (suspended, re-activated or its dates changed), a user was graded, or a course was updated.';
$string['privacy:metadata:zohosync_receiver:grade_item'] = 'For a grade: the graded item (its id, type, activity, name and maximum grade) and whether it is the course total.';
$string['privacy:metadata:zohosync_receiver:objectid'] = 'The id of the changed record (user, enrolment, grade or course).';
$string['privacy:metadata:zohosync_receiver:other'] = 'Details of the event: for a grade, the final grade and whether it was overridden; for an unenrolment, the enrolment that was removed; for an enrolment, the enrolment method; for a course, its short and full names and the fields changed.';
$string['privacy:metadata:zohosync_receiver:relateduserid'] = 'The id of the user the event is about.';
$string['privacy:metadata:zohosync_receiver:timecreated'] = 'The time of the event.';
$string['privacy:metadata:zohosync_receiver:userid'] = 'The id of the user who made the change.';
$string['receiverheading'] = 'Sync service';
$string['receiverheading_desc'] = 'Where account, enrolment, grading and course events are sent. Every delivery is signed with the tenant\'s secret (HMAC-SHA256 of the time and the body, in the X-Sync-Timestamp and X-Sync-Signature headers); the sync service refuses deliveries signed more than 5 minutes from its own clock, so this server\'s clock must be right.';
$string['receiverurl'] = 'Receiver URL';
$string['receiverurl_desc'] = 'The sync service\'s base URL, for example https://sync.school.example. Deliveries are posted to this URL followed by /v1/webhooks/moodle/ and the tenant id. Use https, and the final URL: redirects are not followed. A receiver on a private network must be allowed in Site administration > General > Security > HTTP security (cURL blocked hosts list and allowed ports).';
$string['receiverurl_invalid'] = 'This URL cannot be used: {$a}.';
$string['secret'] = 'Signing secret';
$string['secret_desc'] = 'The tenant\'s webhook secret: the value of the environment variable named by the tenant\'s moodle.webhook_secret_env on the sync service. It is never written to logs. To keep it out of the database, set $CFG->forced_plugin_settings[\'local_zohosync\'][\'secret\'] in config.php instead.';
$string['taskpurgequeue'] = 'Delete queued Zoho sync events no delivery task refers to';
$string['tasksendevent'] = 'Send an event to the Zoho sync service';
$string['tenant'] = 'Tenant id';
$string['tenant_desc'] = 'This school\'s id in the sync service\'s tenants file: letters, digits, _ and -.';
$string['timeout'] = 'Timeout (seconds)';
$string['timeout_desc'] = 'How long one delivery may take before it counts as failed and is retried later (1 to 60 seconds).';
