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

namespace local_zohosync\admin;

use local_zohosync\config;

/**
 * The receiver URL setting: a text field checked the way deliveries use it.
 *
 * PARAM_URL is not used because it refuses host names without a dot (http://sync:8780 on a
 * private network) and top-level domains its list does not know; the check here is the one
 * {@see config::url_problem()} applies before every delivery.
 *
 * @package    local_zohosync
 * @copyright  2026 sync_pipelines contributors
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
class setting_receiverurl extends \admin_setting_configtext {

    /**
     * A receiver URL setting, empty by default.
     *
     * @param string $name 'local_zohosync/receiverurl'.
     * @param string|\lang_string $visiblename
     * @param string|\lang_string $description
     */
    public function __construct($name, $visiblename, $description) {
        parent::__construct($name, $visiblename, $description, '', PARAM_RAW_TRIMMED, 60);
    }

    /**
     * Accept an empty value (nothing is sent) or a usable base URL.
     *
     * @param string $data
     * @return true|string true, or the error shown under the field.
     */
    public function validate($data) {
        $data = trim((string) $data);
        if ($data === '') {
            return true;
        }
        $problem = config::url_problem($data);
        return $problem === null ? true : get_string('receiverurl_invalid', 'local_zohosync', $problem);
    }
}
