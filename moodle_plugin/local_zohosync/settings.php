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
 * Settings of local_zohosync: Site administration > Plugins > Local plugins > Zoho sync webhooks.
 *
 * @package    local_zohosync
 * @copyright  2026 sync_pipelines contributors
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

defined('MOODLE_INTERNAL') || die();

if ($hassiteconfig) {
    $settings = new admin_settingpage('local_zohosync', new lang_string('pluginname', 'local_zohosync'));
    $ADMIN->add('localplugins', $settings);

    if ($ADMIN->fulltree) {
        $settings->add(new admin_setting_heading('local_zohosync/receiverheading',
            new lang_string('receiverheading', 'local_zohosync'),
            new lang_string('receiverheading_desc', 'local_zohosync')));

        $settings->add(new \local_zohosync\admin\setting_receiverurl('local_zohosync/receiverurl',
            new lang_string('receiverurl', 'local_zohosync'),
            new lang_string('receiverurl_desc', 'local_zohosync')));

        $settings->add(new admin_setting_configtext('local_zohosync/tenant',
            new lang_string('tenant', 'local_zohosync'),
            new lang_string('tenant_desc', 'local_zohosync'), '', PARAM_ALPHANUMEXT, 30));

        $settings->add(new admin_setting_configpasswordunmask('local_zohosync/secret',
            new lang_string('secret', 'local_zohosync'),
            new lang_string('secret_desc', 'local_zohosync'), ''));

        $choices = [];
        $defaults = [];
        foreach (array_keys(\local_zohosync\config::EVENTS) as $key) {
            $choices[$key] = new lang_string('event_' . $key, 'local_zohosync');
            $defaults[$key] = 1;
        }
        $settings->add(new admin_setting_configmulticheckbox('local_zohosync/events',
            new lang_string('events', 'local_zohosync'),
            new lang_string('events_desc', 'local_zohosync'), $defaults, $choices));

        $settings->add(new admin_setting_configtext('local_zohosync/timeout',
            new lang_string('timeout', 'local_zohosync'),
            new lang_string('timeout_desc', 'local_zohosync'),
            \local_zohosync\config::DEFAULT_TIMEOUT, PARAM_INT, 5));
    }
}
