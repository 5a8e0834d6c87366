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
 * Sets up the sync pipeline's web-services access, idempotently, and prints its token.
 *
 * Creates or updates: web services and the REST protocol enabled, the "Web services" authentication
 * enabled; a user (auth webservice); a system role with exactly the capabilities the pipeline needs
 * (LOCAL_ZOHOSYNC_CAPABILITIES, plus mod/<module>:view for the graded activity types), allowed to
 * assign the student and editingteacher roles, and assigned to the user; an external service
 * (authorised users only) with exactly LOCAL_ZOHOSYNC_FUNCTIONS, the user authorised; a permanent
 * token, kept from one run to the next unless --rotate-token.
 *
 * Only the token goes to stdout (TOKEN=$(php local/zohosync/cli/setup_pipeline.php)); the report
 * goes to stderr. --check changes nothing and exits 1 when anything is missing or differs.
 *
 * @package    local_zohosync
 * @copyright  2026 sync_pipelines contributors
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

define('CLI_SCRIPT', true);

require(__DIR__ . '/../../../config.php');
require_once($CFG->libdir . '/clilib.php');
require_once($CFG->dirroot . '/user/lib.php');

/** @var string The role's short name. */
const LOCAL_ZOHOSYNC_ROLE = 'zohosync_pipeline';

/** @var string The external service's short name. */
const LOCAL_ZOHOSYNC_SERVICE = 'zohosync';

/** @var string The external service's name (unique too). */
const LOCAL_ZOHOSYNC_SERVICE_NAME = 'Zoho sync pipeline';

/** @var string[] The roles the pipeline enrols with (enrol_manual_enrol_users roleid 5 and 3). */
const LOCAL_ZOHOSYNC_ASSIGNABLE = ['student', 'editingteacher'];

// The web-service functions the pipeline calls (sync_pipelines/moodle/preflight.py REQUIRED_FUNCTIONS), and why.
// LOCAL_ZOHOSYNC_FUNCTIONS start.
const LOCAL_ZOHOSYNC_FUNCTIONS = [
    'core_webservice_get_site_info' => 'site_info(): the site, its version and the token\'s functions, to check a connection',
    'core_user_get_users_by_field' => 'finding accounts by idnumber or e-mail before creating any',
    'core_user_get_users' => 'finding accounts by criteria, e.g. every e-mail of the school\'s domain (email %@domain)',
    'core_user_create_users' => 'creating accounts',
    'core_user_update_users' => 'updating accounts: names, e-mail, idnumber, suspension',
    'core_course_get_categories' => 'finding the category of a programme (by idnumber)',
    'core_course_create_categories' => 'a category per programme',
    'core_course_get_courses_by_field' => 'finding the course of a class (by idnumber or shortname)',
    'core_course_create_courses' => 'a course per class',
    'core_course_update_courses' => 'updating a class\'s course: names, idnumber, category, dates, visibility',
    'enrol_manual_enrol_users' => 'enrolling students (role 5) and teachers (role 3)',
    'enrol_manual_unenrol_users' => 'unenrolling',
    'core_enrol_get_enrolled_users' => 'get_enrolled_users(): a course\'s enrolled users and their roles',
    'gradereport_user_get_grade_items' => 'the grades to write back to Zoho',
    'core_grades_get_gradeitems' => 'the preflight: every grade item of a course, to find the activities the role cannot see',
    'mod_assign_get_assignments' => 'the assignments of a class\'s course, to find the unit\'s assessments',
    'core_grading_get_definitions' => 'an assessment\'s rubric (criterion and level ids)',
    'core_grading_save_definitions' => 'the rubric of the unit\'s BTEC criteria, created or updated with Moodle\'s ids',
    'core_grading_get_gradingform_instances' => 'each learner\'s rubric filling (which criteria are achieved)',
    'mod_assign_get_grades' => 'the learner, attempt and grader of each filling',
];
// LOCAL_ZOHOSYNC_FUNCTIONS end.

// Exactly the capabilities the role gets (besides mod/<module>:view), each with the function that
// needs it and what happens without it, as measured on Moodle 4.5 (README.md, "The pipeline's
// web-services token"). All are granted in the system context.
// LOCAL_ZOHOSYNC_CAPABILITIES start.
const LOCAL_ZOHOSYNC_CAPABILITIES = [
    'webservice/rest:use' =>
        'every function: the REST protocol (without it every call is accessexception)',
    'moodle/grade:managegradingforms' =>
        'core_grading_save_definitions and core_grading_get_gradingform_instances (nopermissions)',
    'mod/assign:viewgrades' =>
        'mod_assign_get_grades: without it (or mod/assign:grade) no error, assignments [] and a warning',
    'moodle/user:create' =>
        'core_user_create_users (nopermissions)',
    'moodle/user:update' =>
        'core_user_update_users (nopermissions)',
    'moodle/user:viewdetails' =>
        'core_user_get_users_by_field and core_user_get_users: without it no user is returned, no error',
    'moodle/user:viewalldetails' =>
        'core_user_get_users_by_field and core_user_get_users: the idnumber (and username); without it a search ' .
        'by idnumber answers [] for users who exist, no error',
    'moodle/site:viewuseridentity' =>
        'core_user_get_users_by_field and core_user_get_users: the e-mail (an identity field, $CFG->showuseridentity); ' .
        'without it a search by email answers [] for users who exist, no error',
    'moodle/site:viewfullnames' =>
        'core_user_get_users_by_field and core_user_get_users: the firstname and lastname (the pipeline compares ' .
        'them with Zoho\'s); without it they are left out, no error',
    'moodle/user:viewhiddendetails' =>
        'core_user_get_users_by_field and core_user_get_users: the fields the site hides ($CFG->hiddenuserfields), ' .
        'e.g. suspended; without it a hidden suspended is left out, no error, and a suspended account reads as active',
    'moodle/category:manage' =>
        'core_course_create_categories (nopermissions); core_course_get_categories returns a category\'s idnumber ' .
        'only with it, and the pipeline finds a programme\'s category by idnumber',
    'moodle/category:viewhiddencategories' =>
        'core_course_get_categories: a hidden category is not returned without it (the pipeline would create ' .
        'it again and fail on the idnumber); core_course_create_courses in a hidden category',
    'moodle/course:create' =>
        'core_course_create_courses (nopermissions)',
    'moodle/course:update' =>
        'core_course_update_courses (nopermissions); core_course_get_courses_by_field returns a course\'s idnumber ' .
        'only with it, and the pipeline finds a class\'s course by idnumber',
    'moodle/course:view' =>
        'entering a course the user is not enrolled in: enrol_manual_enrol_users, enrol_manual_unenrol_users, ' .
        'core_enrol_get_enrolled_users, gradereport_user_get_grade_items, core_grades_get_gradeitems, ' .
        'core_course_update_courses (requireloginerror)',
    'moodle/course:viewhiddencourses' =>
        'the same calls (enrol_manual_enrol_users, enrol_manual_unenrol_users, core_enrol_get_enrolled_users, ' .
        'gradereport_user_get_grade_items, core_grades_get_gradeitems, core_course_update_courses) on a hidden course ' .
        '(requireloginerror), and core_course_get_courses_by_field leaves hidden courses out: a class\'s course ' .
        'before it is shown, or hidden once the class is deleted',
    'moodle/course:visibility' =>
        'core_course_update_courses with a new visible (a deleted class hides its course: nopermissions); ' .
        'core_course_create_courses ignores visible without it',
    'moodle/course:changefullname' =>
        'core_course_update_courses with a new fullname (nopermissions)',
    'moodle/course:changeshortname' =>
        'core_course_update_courses with a new shortname (nopermissions)',
    'moodle/course:changeidnumber' =>
        'core_course_update_courses with a new idnumber, e.g. linking an existing course (nopermissions)',
    'moodle/course:changecategory' =>
        'core_course_update_courses with a new categoryid (nopermissions)',
    'enrol/manual:enrol' =>
        'enrol_manual_enrol_users (nopermissions)',
    'enrol/manual:unenrol' =>
        'enrol_manual_unenrol_users (nopermissions)',
    'moodle/role:assign' =>
        'enrol_manual_enrol_users: the role given must be one the user may assign (wsusercannotassign)',
    'moodle/course:enrolreview' =>
        'core_enrol_get_enrolled_users: with onlyactive 1 (how the pipeline reads a course\'s active enrolments) ' .
        'it is required (nopermissions); it also lets the user list participants, which moodle/course:viewparticipants ' .
        'would otherwise be needed for',
    'moodle/site:accessallgroups' =>
        'a course in separate groups mode: gradereport_user_get_grade_items answers notingroup and ' .
        'core_enrol_get_enrolled_users answers [] without it',
    'gradereport/user:view' =>
        'gradereport_user_get_grade_items (nopermissions)',
    'moodle/grade:viewall' =>
        'gradereport_user_get_grade_items for every user of a course, userid 0 (nopermissions)',
];
// LOCAL_ZOHOSYNC_CAPABILITIES end.

/** @var string Why mod/<module>:view is granted for each graded activity type. */
const LOCAL_ZOHOSYNC_MODULE_VIEW_REASON =
    'gradereport_user_get_grade_items leaves out the grade items of this activity type without it (no error), ' .
    '(the preflight compares it with core_grades_get_gradeitems)';

$usage = "Sets up the sync pipeline's web-services access (user, role, service, token) and prints the token.

Creates or updates, idempotently: web services and the REST protocol enabled; the pipeline's user
(authentication \"Web services\"); the system role " . LOCAL_ZOHOSYNC_ROLE . " with exactly the capabilities the
pipeline needs, allowed to assign " . implode(' and ', LOCAL_ZOHOSYNC_ASSIGNABLE) . ";
the external service " . LOCAL_ZOHOSYNC_SERVICE . " (authorised users only) with exactly the pipeline's functions;
the user authorised; a permanent token. Only the token is printed on stdout; the report goes to stderr.

Usage:
    php local/zohosync/cli/setup_pipeline.php [--username=NAME] [--activity-modules=assign,quiz,...]
    php local/zohosync/cli/setup_pipeline.php --check
    TOKEN=\$(php local/zohosync/cli/setup_pipeline.php)

Options:
--username=NAME            The pipeline's user (default zohosync_ws); created when missing.
--activity-modules=LIST    The graded activity types whose mod/<module>:view the role gets, comma-separated
                           (default: every installed module with grades, FEATURE_GRADE_HAS_GRADE). Without
                           it the pipeline does not see that type's grade items. Modules without a
                           mod/<module>:view capability need none.
--check                    Change nothing: report what is missing or differs; exit 1 if anything is.
--rotate-token             Delete the user's tokens for the service and create a new one.
-h, --help                 Print this help.

Exit status: 0 done (or, with --check, nothing missing), 1 something missing (--check), 2 error.
";

[$options, $unrecognised] = cli_get_params([
    'help' => false,
    'username' => 'zohosync_ws',
    'activity-modules' => null,
    'check' => false,
    'rotate-token' => false,
], ['h' => 'help']);

if ($unrecognised) {
    cli_error(get_string('cliunknowoption', 'admin', implode(PHP_EOL . '  ', $unrecognised)) . PHP_EOL . $usage, 2);
}
if ($options['help']) {
    cli_writeln($usage, STDERR);
    exit(0);
}
$username = is_string($options['username']) ? core_text::strtolower(trim($options['username'])) : '';
if ($username === '' || clean_param($username, PARAM_USERNAME) !== $username) {
    cli_error('--username must be a valid Moodle username (lower case letters, digits, _ - . @).', 2);
}
if ($options['check'] && $options['rotate-token']) {
    cli_error('--check changes nothing: it cannot be combined with --rotate-token.', 2);
}

\core\session\manager::set_user(get_admin());

$setup = new local_zohosync_pipeline_setup((bool) $options['check']);
try {
    $modules = $setup->activity_modules($options['activity-modules']);
    $capabilities = LOCAL_ZOHOSYNC_CAPABILITIES;
    foreach ($modules as $module) {
        $capabilities["mod/{$module}:view"] = LOCAL_ZOHOSYNC_MODULE_VIEW_REASON;
    }
    $setup->site();
    $user = $setup->user($username);
    $roleid = $setup->role($capabilities, $user);
    $service = $setup->service(LOCAL_ZOHOSYNC_FUNCTIONS, $user);
    $token = $setup->token($service, $user, (bool) $options['rotate-token']);
} catch (moodle_exception $e) {
    cli_error('setup_pipeline: ' . $e->getMessage() . (empty($e->debuginfo) ? '' : ' (' . $e->debuginfo . ')'), 2);
}

if ($setup->check) {
    if ($setup->problems) {
        cli_writeln("{$setup->problems} thing(s) missing or different: run without --check to set them up.", STDERR);
        exit(1);
    }
    cli_writeln('Everything is set up.', STDERR);
    exit(0);
}
cli_writeln('Done: the token for ' . $username . ' and the service ' . LOCAL_ZOHOSYNC_SERVICE .
    ' is on stdout (put it in the variable the tenant\'s moodle.token_env names).', STDERR);
cli_writeln($token);
exit(0);

/**
 * The steps of the set-up; each reports what it found, and (unless checking) sets what is missing.
 *
 * @package    local_zohosync
 * @copyright  2026 sync_pipelines contributors
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
class local_zohosync_pipeline_setup {

    /** @var bool Only report. */
    public $check;

    /** @var int What --check found missing or different. */
    public $problems = 0;

    /**
     * @param bool $check only report, change nothing.
     */
    public function __construct(bool $check) {
        $this->check = $check;
    }

    /**
     * One line of the report, on stderr.
     *
     * @param string $state ok, missing, differs (check) or added, removed, changed, created (set-up).
     * @param string $what
     */
    private function say(string $state, string $what): void {
        cli_writeln(sprintf('%-8s %s', $state, $what), STDERR);
    }

    /**
     * Something is not as it should be: with --check, count and report it; else report the fix.
     *
     * @param string $checkstate 'missing' or 'differs'.
     * @param string $fixstate what the set-up does about it ('added', 'removed', 'changed', 'created').
     * @param string $what
     * @return bool true when the caller should fix it (not checking).
     */
    private function problem(string $checkstate, string $fixstate, string $what): bool {
        if ($this->check) {
            $this->problems++;
            $this->say($checkstate, $what);
            return false;
        }
        $this->say($fixstate, $what);
        return true;
    }

    /**
     * The modules whose mod/<module>:view the role gets.
     *
     * @param string|bool|null $list --activity-modules (null: every installed module with grades).
     * @return string[] module names.
     */
    public function activity_modules($list): array {
        $installed = core_component::get_plugin_list('mod');
        if ($list === null) {
            $names = [];
            foreach (array_keys($installed) as $name) {
                if (plugin_supports('mod', $name, FEATURE_GRADE_HAS_GRADE, false)) {
                    $names[] = $name;
                }
            }
        } else {
            if (!is_string($list)) {
                cli_error('--activity-modules needs a value, e.g. --activity-modules=assign,quiz', 2);
            }
            $names = array_values(array_unique(array_filter(array_map('trim', explode(',', core_text::strtolower($list))))));
            foreach ($names as $name) {
                if (!array_key_exists($name, $installed)) {
                    cli_error("--activity-modules: {$name} is not an installed activity module.", 2);
                }
            }
        }
        $modules = [];
        foreach ($names as $name) {
            if (get_capability_info("mod/{$name}:view")) {
                $modules[] = $name;
            } else {
                $this->say('note', "mod_{$name} has no mod/{$name}:view capability: its activities need none.");
            }
        }
        sort($modules);
        $this->say('note', 'activity types whose grade items the pipeline sees: ' . ($modules ? implode(', ', $modules) : 'none'));
        return $modules;
    }

    /**
     * Web services, the REST protocol and the "Web services" authentication enabled.
     */
    public function site(): void {
        global $CFG;
        if (!empty($CFG->enablewebservices)) {
            $this->say('ok', 'web services enabled');
        } else if ($this->problem('missing', 'changed', 'web services enabled (enablewebservices)')) {
            add_to_config_log('enablewebservices', $CFG->enablewebservices ?? '0', '1', 'core');
            set_config('enablewebservices', 1);
        }
        $protocols = empty($CFG->webserviceprotocols) ? [] : explode(',', $CFG->webserviceprotocols);
        if (in_array('rest', $protocols, true)) {
            $this->say('ok', 'REST protocol enabled');
        } else if ($this->problem('missing', 'changed', 'REST protocol enabled (webserviceprotocols)')) {
            \core\plugininfo\webservice::enable_plugin('rest', 1);
        }
        if (is_enabled_auth('webservice')) {
            $this->say('ok', 'authentication "Web services" enabled');
        } else if ($this->problem('missing', 'changed', 'authentication "Web services" enabled (auth)')) {
            \core\plugininfo\auth::enable_plugin('webservice', 1);
        }
    }

    /**
     * The pipeline's user: auth webservice, active, not a site administrator.
     *
     * @param string $username
     * @return stdClass|null the user (null only when checking and it does not exist).
     */
    public function user(string $username): ?stdClass {
        global $CFG, $DB;
        $user = $DB->get_record('user', ['username' => $username, 'mnethostid' => $CFG->mnet_localhost_id]);
        if (!$user) {
            if (!$this->problem('missing', 'created', "user {$username} (authentication webservice)")) {
                return null;
            }
            $id = user_create_user((object) [
                'username' => $username,
                'auth' => 'webservice',
                'firstname' => 'Zoho sync',
                'lastname' => 'pipeline',
                'email' => $username . '@example.invalid',
                // No local password: the "Web services" authentication never logs anyone in.
                'password' => AUTH_PASSWORD_NOT_CACHED,
                'confirmed' => 1,
                'mnethostid' => $CFG->mnet_localhost_id,
            ], false, true);
            return $DB->get_record('user', ['id' => $id], '*', MUST_EXIST);
        }
        if ($user->deleted) {
            cli_error("user {$username} is deleted: choose another --username.", 2);
        }
        if (is_siteadmin($user)) {
            cli_error("user {$username} is a site administrator: the pipeline needs a user of its own.", 2);
        }
        if ($user->auth !== 'webservice') {
            cli_error("user {$username} exists with authentication {$user->auth}, not webservice: choose another " .
                '--username, or change its authentication to "Web services" if it is the pipeline\'s.', 2);
        }
        $this->say('ok', "user {$username} (id {$user->id}, authentication webservice)");
        if ($user->suspended || !$user->confirmed) {
            if ($this->problem('differs', 'changed', "user {$username} active (was suspended or unconfirmed)")) {
                $user->suspended = 0;
                $user->confirmed = 1;
                user_update_user((object) ['id' => $user->id, 'suspended' => 0, 'confirmed' => 1], false, true);
            }
        }
        return $user;
    }

    /**
     * The system role with exactly $capabilities, allowed to assign the enrolment roles, assigned to the user.
     *
     * @param array<string, string> $capabilities capability => why.
     * @param stdClass|null $user
     * @return int|null the role's id (null only when checking and it does not exist).
     */
    public function role(array $capabilities, ?stdClass $user): ?int {
        global $DB;
        $system = context_system::instance();
        foreach (array_keys($capabilities) as $capability) {
            if (!get_capability_info($capability)) {
                cli_error("this Moodle does not know the capability {$capability}.", 2);
            }
        }
        $roleid = $DB->get_field('role', 'id', ['shortname' => LOCAL_ZOHOSYNC_ROLE]);
        if (!$roleid) {
            if (!$this->problem('missing', 'created', 'role ' . LOCAL_ZOHOSYNC_ROLE)) {
                $this->problems += count($capabilities);
                return null;
            }
            $roleid = create_role('Zoho sync pipeline', LOCAL_ZOHOSYNC_ROLE,
                'The sync pipeline\'s web-services role (local_zohosync/cli/setup_pipeline.php): exactly the ' .
                'capabilities the pipeline\'s functions need. Changed by the script on every run.');
        } else {
            $this->say('ok', 'role ' . LOCAL_ZOHOSYNC_ROLE . " (id {$roleid})");
        }
        $roleid = (int) $roleid;

        $levels = array_values(get_role_contextlevels($roleid));
        if ($levels == [CONTEXT_SYSTEM]) {
            $this->say('ok', 'role assignable in the system context only');
        } else if ($this->problem('differs', 'changed', 'role assignable in the system context only')) {
            set_role_contextlevels($roleid, [CONTEXT_SYSTEM]);
        }

        $granted = $DB->get_records_menu('role_capabilities', ['roleid' => $roleid, 'contextid' => $system->id],
            'capability', 'capability, permission');
        $changed = false;
        $before = $this->problems;
        foreach ($capabilities as $capability => $why) {
            if (isset($granted[$capability]) && (int) $granted[$capability] === CAP_ALLOW) {
                continue;
            }
            if ($this->problem('missing', 'added', "capability {$capability}: {$why}")) {
                assign_capability($capability, CAP_ALLOW, $roleid, $system->id, true);
                $changed = true;
            }
        }
        foreach (array_keys($granted) as $capability) {
            if (!array_key_exists($capability, $capabilities) &&
                    $this->problem('differs', 'removed', "capability {$capability} (not one the pipeline needs)")) {
                unassign_capability($capability, $roleid, $system->id);
                $changed = true;
            }
        }
        if ($this->problems === $before) {
            $this->say('ok', 'role has exactly the ' . count($capabilities) . ' capabilities the pipeline needs');
        }
        $overrides = $DB->count_records_select('role_capabilities', 'roleid = ? AND contextid <> ?', [$roleid, $system->id]);
        if ($overrides) {
            $this->say('note', "the role has {$overrides} override(s) below the system context (left as they are)");
        }

        $wanted = [];
        foreach (LOCAL_ZOHOSYNC_ASSIGNABLE as $shortname) {
            $target = $DB->get_field('role', 'id', ['shortname' => $shortname]);
            if (!$target) {
                cli_error("there is no role with the short name {$shortname}.", 2);
            }
            $wanted[(int) $target] = $shortname;
        }
        $allowed = array_map('intval', $DB->get_fieldset_select('role_allow_assign', 'allowassign', 'roleid = ?', [$roleid]));
        foreach ($wanted as $target => $shortname) {
            if (in_array($target, $allowed, true)) {
                $this->say('ok', "role may assign {$shortname}");
            } else if ($this->problem('missing', 'added', "role may assign {$shortname} (enrol_manual_enrol_users)")) {
                core_role_set_assign_allowed($roleid, $target);
                $changed = true;
            }
        }
        foreach ($allowed as $target) {
            if (!isset($wanted[$target])) {
                $name = $DB->get_field('role', 'shortname', ['id' => $target]);
                if ($this->problem('differs', 'removed', "role may assign {$name} (not needed)")) {
                    $DB->delete_records('role_allow_assign', ['roleid' => $roleid, 'allowassign' => $target]);
                    $changed = true;
                }
            }
        }

        if ($user) {
            if (user_has_role_assignment($user->id, $roleid, $system->id)) {
                $this->say('ok', "role assigned to {$user->username} in the system context");
            } else if ($this->problem('missing', 'added', "role assigned to {$user->username} in the system context")) {
                role_assign($roleid, $user->id, $system->id);
                $changed = true;
            }
        } else {
            $this->problem('missing', 'added', 'role assigned to the user');
        }
        if ($changed) {
            accesslib_clear_role_cache($roleid);
        }
        return $roleid;
    }

    /**
     * The external service with exactly $functions, for authorised users only, the user authorised.
     *
     * @param array<string, string> $functions function => what for.
     * @param stdClass|null $user
     * @return stdClass|null the service (null only when checking and it does not exist).
     */
    public function service(array $functions, ?stdClass $user): ?stdClass {
        global $DB;
        foreach (array_keys($functions) as $function) {
            if (!$DB->record_exists('external_functions', ['name' => $function])) {
                cli_error("this Moodle has no web-service function {$function}.", 2);
            }
        }
        $service = $DB->get_record('external_services', ['shortname' => LOCAL_ZOHOSYNC_SERVICE]);
        if (!$service) {
            // A service made by hand (as the README once said) has the name and maybe no short name.
            $named = $DB->get_record('external_services', ['name' => LOCAL_ZOHOSYNC_SERVICE_NAME]);
            if ($named && empty($named->component) && (string) $named->shortname === '') {
                if (!$this->problem('differs', 'changed', "external service '{$named->name}' (id {$named->id}) gets the " .
                        'short name ' . LOCAL_ZOHOSYNC_SERVICE)) {
                    $this->problems += count($functions) + 1;
                    return null;
                }
                $DB->update_record('external_services', (object) ['id' => $named->id, 'shortname' => LOCAL_ZOHOSYNC_SERVICE,
                    'timemodified' => time()]);
                $service = $DB->get_record('external_services', ['id' => $named->id], '*', MUST_EXIST);
            } else if ($named) {
                cli_error("an external service named '{$named->name}' exists with the short name '{$named->shortname}'" .
                    (empty($named->component) ? '' : " ({$named->component})") . ': rename it, or give it the short name ' .
                    LOCAL_ZOHOSYNC_SERVICE . ' if it is the pipeline\'s.', 2);
            }
        }
        if (!$service) {
            if (!$this->problem('missing', 'created', 'external service ' . LOCAL_ZOHOSYNC_SERVICE)) {
                $this->problems += count($functions) + 1;
                return null;
            }
            $now = time();
            $service = (object) [
                'name' => LOCAL_ZOHOSYNC_SERVICE_NAME,
                'shortname' => LOCAL_ZOHOSYNC_SERVICE,
                'enabled' => 1,
                'restrictedusers' => 1,
                'requiredcapability' => '',
                'downloadfiles' => 0,
                'uploadfiles' => 0,
                'component' => null,
                'timecreated' => $now,
                'timemodified' => $now,
            ];
            $service->id = $DB->insert_record('external_services', $service);
        } else {
            $this->say('ok', 'external service ' . LOCAL_ZOHOSYNC_SERVICE . " (id {$service->id})");
            if (!empty($service->component)) {
                cli_error('the external service ' . LOCAL_ZOHOSYNC_SERVICE . " belongs to {$service->component}: " .
                    'it cannot be changed here.', 2);
            }
            $settings = ['enabled' => 1, 'restrictedusers' => 1, 'requiredcapability' => '', 'downloadfiles' => 0,
                'uploadfiles' => 0];
            $update = ['id' => $service->id];
            foreach ($settings as $field => $value) {
                if ((string) $service->$field !== (string) $value) {
                    $update[$field] = $value;
                }
            }
            if (count($update) > 1) {
                $what = 'external service settings: ' . implode(', ', array_map(static function ($field) use ($update) {
                    return $field . '=' . $update[$field];
                }, array_diff(array_keys($update), ['id'])));
                if ($this->problem('differs', 'changed', $what)) {
                    $update['timemodified'] = time();
                    $DB->update_record('external_services', (object) $update);
                }
            }
        }

        $present = $DB->get_fieldset_select('external_services_functions', 'functionname', 'externalserviceid = ?',
            [$service->id]);
        $before = $this->problems;
        foreach ($functions as $function => $why) {
            if (!in_array($function, $present, true) &&
                    $this->problem('missing', 'added', "function {$function}: {$why}")) {
                $DB->insert_record('external_services_functions',
                    (object) ['externalserviceid' => $service->id, 'functionname' => $function]);
            }
        }
        foreach ($present as $function) {
            if (!array_key_exists($function, $functions) &&
                    $this->problem('differs', 'removed', "function {$function} (the pipeline does not call it)")) {
                $DB->delete_records('external_services_functions',
                    ['externalserviceid' => $service->id, 'functionname' => $function]);
            }
        }
        if ($this->problems === $before) {
            $this->say('ok', 'service has exactly the ' . count($functions) . ' functions the pipeline calls');
        }

        if (!$user) {
            $this->problem('missing', 'added', 'user authorised for the service');
            return $service;
        }
        $authorised = $DB->get_record('external_services_users', ['externalserviceid' => $service->id, 'userid' => $user->id]);
        if (!$authorised) {
            if ($this->problem('missing', 'added', "{$user->username} authorised for the service")) {
                $DB->insert_record('external_services_users', (object) ['externalserviceid' => $service->id,
                    'userid' => $user->id, 'iprestriction' => null, 'validuntil' => null, 'timecreated' => time()]);
            }
        } else if (!empty($authorised->validuntil) && $authorised->validuntil < time()) {
            if ($this->problem('differs', 'changed', "{$user->username}'s authorisation for the service expired; " .
                    'now without an end date')) {
                $DB->set_field('external_services_users', 'validuntil', null, ['id' => $authorised->id]);
            }
        } else {
            $this->say('ok', "{$user->username} authorised for the service" .
                (empty($authorised->iprestriction) ? '' : " (IP restriction {$authorised->iprestriction} kept)"));
        }
        return $service;
    }

    /**
     * The user's permanent token for the service: kept, or made (always made anew with $rotate).
     *
     * @param stdClass|null $service
     * @param stdClass|null $user
     * @param bool $rotate delete the user's tokens for the service first.
     * @return string the token ('' only when checking).
     */
    public function token(?stdClass $service, ?stdClass $user, bool $rotate): string {
        global $CFG, $DB;
        if (!$service || !$user) {
            $this->problem('missing', 'created', 'a permanent token');
            return '';
        }
        $conditions = ['userid' => $user->id, 'externalserviceid' => $service->id, 'tokentype' => EXTERNAL_TOKEN_PERMANENT];
        if ($rotate) {
            $count = $DB->count_records('external_tokens', $conditions);
            $DB->delete_records('external_tokens', $conditions);
            $this->say('removed', "{$count} token(s) of {$user->username} for the service (--rotate-token)");
        }
        $tokens = $DB->get_records_select('external_tokens',
            'userid = :userid AND externalserviceid = :externalserviceid AND tokentype = :tokentype AND ' .
            '(validuntil = 0 OR validuntil IS NULL OR validuntil > :now)',
            $conditions + ['now' => time()], 'timecreated DESC, id DESC');
        if ($tokens) {
            $token = reset($tokens);
            $this->say('ok', "a permanent token of {$user->username} for the service (id {$token->id}, kept" .
                (empty($token->iprestriction) ? '' : ", IP restriction {$token->iprestriction}") . ')');
            return $token->token;
        }
        if (!$this->problem('missing', 'created', "a permanent token of {$user->username} for the service")) {
            return '';
        }
        $context = context_system::instance();
        if (class_exists('\core_external\util') && method_exists('\core_external\util', 'generate_token')) {
            // Moodle 4.2 and later; the token's name (shown under Manage tokens) from 4.3.
            $method = new ReflectionMethod('\core_external\util', 'generate_token');
            $args = [EXTERNAL_TOKEN_PERMANENT, $service, (int) $user->id, $context, 0, ''];
            if ($method->getNumberOfParameters() >= 7) {
                $args[] = 'Zoho sync pipeline';
            }
            return $method->invokeArgs(null, $args);
        }
        require_once($CFG->libdir . '/externallib.php');
        return external_generate_token(EXTERNAL_TOKEN_PERMANENT, $service, $user->id, $context, 0, '');
    }
}
