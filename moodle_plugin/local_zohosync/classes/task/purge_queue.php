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

use local_zohosync\queue;

/**
 * Deletes the payloads no delivery task will send any more (scheduled, daily).
 *
 * A delivery deletes its own payload once it is done with; this catches the rest: a task Moodle
 * removed after its attempts were used up (4.4+), or one an administrator deleted.
 *
 * @package    local_zohosync
 * @copyright  2026 sync_pipelines contributors
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
class purge_queue extends \core\task\scheduled_task {

    /**
     * The task's name, shown to administrators.
     *
     * @return string
     */
    public function get_name() {
        return get_string('taskpurgequeue', 'local_zohosync');
    }

    /**
     * Delete the orphaned payloads.
     *
     * @return void
     */
    public function execute() {
        $count = queue::purge_orphans(time());
        mtrace("local_zohosync: deleted {$count} queued payload(s) no delivery task refers to.");
    }
}
