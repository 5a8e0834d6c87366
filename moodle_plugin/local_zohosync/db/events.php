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
 * The events local_zohosync forwards to the sync service.
 *
 * 'internal' => false: the observer runs only once the database transaction that raised the event has
 * committed, so nothing is sent about a change that was rolled back. The observer itself only queues
 * an adhoc task; the network is never touched while the event is being processed.
 *
 * @package    local_zohosync
 * @copyright  2026 sync_pipelines contributors
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

defined('MOODLE_INTERNAL') || die();

$observers = [
    [
        'eventname' => '\core\event\user_created',
        'callback' => '\local_zohosync\observer::queue_delivery',
        'internal' => false,
    ],
    [
        'eventname' => '\core\event\user_updated',
        'callback' => '\local_zohosync\observer::queue_delivery',
        'internal' => false,
    ],
    [
        'eventname' => '\core\event\user_enrolment_created',
        'callback' => '\local_zohosync\observer::queue_delivery',
        'internal' => false,
    ],
    [
        'eventname' => '\core\event\user_enrolment_deleted',
        'callback' => '\local_zohosync\observer::queue_delivery',
        'internal' => false,
    ],
    [
        'eventname' => '\core\event\user_enrolment_updated',
        'callback' => '\local_zohosync\observer::queue_delivery',
        'internal' => false,
    ],
    [
        'eventname' => '\core\event\user_graded',
        'callback' => '\local_zohosync\observer::queue_delivery',
        'internal' => false,
    ],
    [
        'eventname' => '\core\event\course_updated',
        'callback' => '\local_zohosync\observer::queue_delivery',
        'internal' => false,
    ],
];
