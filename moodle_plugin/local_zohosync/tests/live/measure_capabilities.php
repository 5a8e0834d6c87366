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
 * Measures, on a real TEST Moodle, that the pipeline's token can call each of its functions, and which
 * capability each function needs. Never run it on a production site: it creates categories, courses,
 * users, enrolments, assignments and grades, and changes the pipeline's role while it runs.
 *
 * Usage (after cli/setup_pipeline.php has made the token):
 *   php measure_capabilities.php --moodle=<moodle dir> --url=<wwwroot> --token=<token> [--without=a,b]
 *       [--add=c,d] [--each] [--candidates=e,f] [--set=name=value]
 *
 * One scenario: as the pipeline (HTTP, REST, the token): create two categories (one then hidden by the
 * admin) and two courses (one hidden), three users (two students, one teacher), update a user, look
 * them up by idnumber, by e-mail and with core_user_get_users (email %@domain), enrol them (one
 * student suspended, one also in the hidden course), read the enrolled users, the contents, the grade
 * items, update and hide a course, unenrol. As the admin (in this process, Moodle's generators): an
 * assignment, a hidden assignment and an assignment whose grades are hidden in the gradebook, each
 * graded; the first course in forced separate groups mode with the students in a group.
 *
 * --without takes capabilities away for the run, --add grants extra ones, --set changes a site setting
 * (restored afterwards). --each runs the scenario once as the role is, then once without each of the
 * role's capabilities in turn, and prints what changed; --candidates runs it once with each capability
 * named added, and prints what changed. The role is restored at the end.
 *
 * @package    local_zohosync
 * @copyright  2026 sync_pipelines contributors
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

define('CLI_SCRIPT', true);

$opts = getopt('', ['moodle:', 'url:', 'token:', 'without:', 'add:', 'each', 'candidates:', 'set:', 'json', 'modules:']);
foreach (['moodle', 'url', 'token'] as $required) {
    if (empty($opts[$required])) {
        fwrite(STDERR, "--{$required} is required\n");
        exit(2);
    }
}
require(rtrim($opts['moodle'], '/') . '/config.php');
require_once($CFG->libdir . '/testing/generator/lib.php');
require_once($CFG->dirroot . '/mod/assign/locallib.php');
require_once($CFG->dirroot . '/group/lib.php');
require_once($CFG->libdir . '/gradelib.php');
\core\session\manager::set_user(get_admin());

$list = static function ($value): array {
    return is_string($value) ? array_values(array_filter(array_map('trim', explode(',', $value)))) : [];
};
$measure = new local_zohosync_measure(rtrim($opts['url'], '/'), $opts['token']);
$settings = [];
if (!empty($opts['set'])) {
    foreach ((array) $opts['set'] as $pair) {
        [$name, $value] = explode('=', $pair, 2);
        $settings[$name] = $value;
    }
}
$measure->with_settings($settings, static function () use ($measure, $opts, $list) {
    if (isset($opts['each'])) {
        $measure->each();
    } else if (!empty($opts['modules'])) {
        $measure->modules($list($opts['modules']));
    } else if (!empty($opts['candidates'])) {
        $measure->candidates($list($opts['candidates']));
    } else {
        $result = $measure->with_role($list($opts['without'] ?? ''), $list($opts['add'] ?? ''), static function () use ($measure) {
            return $measure->scenario();
        });
        $measure->print_run($result, isset($opts['json']));
    }
});

/**
 * The scenario and the comparisons.
 */
class local_zohosync_measure {
    /** @var string */
    private $url;
    /** @var string */
    private $token;
    /** @var int */
    private $roleid;
    /** @var testing_data_generator */
    private $generator;
    /** @var int runs so far, for unique names. */
    private $run = 0;

    /**
     * @param string $url wwwroot.
     * @param string $token the pipeline's token.
     */
    public function __construct(string $url, string $token) {
        global $DB;
        $this->url = $url;
        $this->token = $token;
        $this->roleid = (int) $DB->get_field('role', 'id', ['shortname' => 'zohosync_pipeline'], MUST_EXIST);
        $this->generator = new testing_data_generator();
    }

    /**
     * Run $fn with site settings changed, then restore them.
     *
     * @param array $settings name => value.
     * @param callable $fn
     */
    public function with_settings(array $settings, callable $fn): void {
        global $CFG;
        $old = [];
        foreach ($settings as $name => $value) {
            $old[$name] = $CFG->$name ?? null;
            set_config($name, $value);
            fwrite(STDERR, "setting {$name}=" . var_export($value, true) . " for the run\n");
        }
        try {
            $fn();
        } finally {
            foreach ($old as $name => $value) {
                set_config($name, $value);
            }
        }
    }

    /**
     * The role's capabilities in the system context.
     *
     * @return string[]
     */
    public function role_capabilities(): array {
        global $DB;
        return $DB->get_fieldset_select('role_capabilities', 'capability', 'roleid = ? AND contextid = ?',
            [$this->roleid, context_system::instance()->id]);
    }

    /**
     * Run $fn with capabilities taken from / added to the role, then restore it.
     *
     * @param string[] $without
     * @param string[] $add
     * @param callable $fn
     * @return mixed what $fn answers.
     */
    public function with_role(array $without, array $add, callable $fn) {
        $system = context_system::instance();
        $before = $this->role_capabilities();
        foreach ($without as $cap) {
            unassign_capability($cap, $this->roleid, $system->id);
        }
        foreach ($add as $cap) {
            assign_capability($cap, CAP_ALLOW, $this->roleid, $system->id, true);
        }
        accesslib_clear_role_cache($this->roleid);
        try {
            return $fn();
        } finally {
            foreach ($add as $cap) {
                if (!in_array($cap, $before, true)) {
                    unassign_capability($cap, $this->roleid, $system->id);
                }
            }
            foreach ($without as $cap) {
                if (in_array($cap, $before, true)) {
                    assign_capability($cap, CAP_ALLOW, $this->roleid, $system->id, true);
                }
            }
            accesslib_clear_role_cache($this->roleid);
            if ($this->role_capabilities() != $before && array_diff($before, $this->role_capabilities())) {
                throw new coding_exception('the role was not restored');
            }
        }
    }

    /**
     * The scenario once as the role is, then once without each of its capabilities.
     */
    public function each(): void {
        $baseline = $this->scenario();
        $this->print_run($baseline, false);
        $caps = $this->role_capabilities();
        sort($caps);
        fwrite(STDOUT, "\n== without one capability at a time (" . count($caps) . ") ==\n");
        foreach ($caps as $cap) {
            $run = $this->with_role([$cap], [], function () {
                return $this->scenario();
            });
            $this->print_diff("without {$cap}", $baseline, $run);
        }
    }

    /**
     * The scenario once as the role is, then once with each candidate added.
     *
     * @param string[] $candidates
     */
    public function candidates(array $candidates): void {
        $baseline = $this->scenario();
        $this->print_run($baseline, false);
        fwrite(STDOUT, "\n== with one more capability at a time ==\n");
        foreach ($candidates as $cap) {
            $run = $this->with_role([], [$cap], function () {
                return $this->scenario();
            });
            $this->print_diff("with {$cap}", $baseline, $run);
        }
    }

    /**
     * For each module: a course with one graded activity of it; are its grade items in
     * gradereport_user_get_grade_items, with and without mod/<module>:view?
     *
     * @param string[] $modules
     */
    public function modules(array $modules): void {
        global $DB;
        $student = $DB->get_field('role', 'id', ['shortname' => 'student'], MUST_EXIST);
        foreach ($modules as $module) {
            $this->run++;
            $tag = core_text::strtolower(date('His') . "-{$module}-" . random_string(4));
            $course = $this->generator->create_course(['shortname' => "zs-m-{$tag}", 'fullname' => "ZS {$tag}"]);
            $user = $this->generator->create_user(['username' => "zs-m-{$tag}"]);
            $this->generator->enrol_user($user->id, $course->id, $student, 'manual');
            $record = ['course' => $course->id, 'name' => "{$module} {$tag}", 'grade' => 10];
            if ($module === 'lti') {
                $record += ['toolurl' => 'https://lti.example.invalid/launch', 'instructorchoiceacceptgrades' => 1];
            }
            try {
                $instance = $this->generator->create_module($module, $record);
            } catch (Throwable $e) {
                fwrite(STDOUT, sprintf("%-14s cannot create an instance here (%s)\n", $module, $e->getMessage()));
                continue;
            }
            grade_update("mod/{$module}", $course->id, 'mod', $module, $instance->id, 0,
                [$user->id => (object) ['userid' => $user->id, 'rawgrade' => 7]],
                ['itemname' => "{$module} {$tag}", 'gradetype' => GRADE_TYPE_VALUE, 'grademax' => 10, 'grademin' => 0]);
            $count = function () use ($course, $module) {
                $r = $this->call('gradereport_user_get_grade_items', ['courseid' => $course->id, 'userid' => 0]);
                $n = 0;
                foreach ($r['body']['usergrades'] ?? [] as $usergrade) {
                    foreach ($usergrade['gradeitems'] ?? [] as $gi) {
                        $n += ($gi['itemmodule'] ?? '') === $module ? 1 : 0;
                    }
                }
                return $r['answer'] === 'ok' ? "{$n} item(s)" : $r['answer'];
            };
            $with = $count();
            $without = $this->with_role(["mod/{$module}:view"], [], $count);
            fwrite(STDOUT, sprintf("%-14s with mod/%s:view: %s; without: %s\n", $module, $module, $with, $without));
        }
    }

    /**
     * Print a run: each step, its answer and observations.
     *
     * @param array $run
     * @param bool $json
     */
    public function print_run(array $run, bool $json): void {
        if ($json) {
            fwrite(STDOUT, json_encode($run, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES) . "\n");
            return;
        }
        $errors = 0;
        foreach ($run as $step => $result) {
            $errors += $result['answer'] === 'ok' ? 0 : 1;
            fwrite(STDOUT, sprintf("%-44s %s%s\n", $step, $result['answer'],
                $result['seen'] ? '  ' . json_encode($result['seen'], JSON_UNESCAPED_SLASHES) : ''));
        }
        fwrite(STDOUT, "-- {$errors} call(s) answered an error\n");
    }

    /**
     * Print what differs between two runs.
     *
     * @param string $label
     * @param array $baseline
     * @param array $run
     */
    private function print_diff(string $label, array $baseline, array $run): void {
        $lines = [];
        foreach ($baseline as $step => $result) {
            $now = $run[$step] ?? ['answer' => '(not run)', 'seen' => []];
            if ($now['answer'] !== $result['answer']) {
                $lines[] = "    {$step}: {$now['answer']}";
            }
            foreach ($result['seen'] as $key => $value) {
                $other = $now['seen'][$key] ?? null;
                if ($other !== $value) {
                    $lines[] = "    {$step}: {$key} " . json_encode($value) . ' -> ' . json_encode($other);
                }
            }
        }
        fwrite(STDOUT, $label . ': ' . ($lines ? count($lines) . " change(s)\n" . implode("\n", $lines) : 'NO CHANGE') . "\n");
    }

    /**
     * One REST call with the pipeline's token.
     *
     * @param string $function
     * @param array $params
     * @return array ['answer' => 'ok' | 'errorcode: message', 'body' => decoded JSON]
     */
    private function call(string $function, array $params = []): array {
        $ch = curl_init($this->url . '/webservice/rest/server.php');
        curl_setopt_array($ch, [
            CURLOPT_POST => true,
            CURLOPT_POSTFIELDS => http_build_query(['wstoken' => $this->token, 'wsfunction' => $function,
                'moodlewsrestformat' => 'json'] + $params, '', '&'),
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_TIMEOUT => 120,
        ]);
        $raw = curl_exec($ch);
        curl_close($ch);
        $body = json_decode((string) $raw, true);
        if (is_array($body) && isset($body['exception'])) {
            return ['answer' => ($body['errorcode'] ?? '?') . ': ' . substr((string) ($body['message'] ?? ''), 0, 160),
                'body' => null];
        }
        if ($raw === false || ($body === null && trim((string) $raw) !== 'null')) {
            return ['answer' => 'not JSON: ' . substr((string) $raw, 0, 160), 'body' => null];
        }
        return ['answer' => 'ok', 'body' => $body];
    }

    /**
     * A step's warnings (answer 'ok' becomes 'warning: ...').
     *
     * @param array $result
     * @return array
     */
    private static function warned(array $result): array {
        if ($result['answer'] === 'ok' && !empty($result['body']['warnings'])) {
            $w = $result['body']['warnings'][0];
            $result['answer'] = 'warning ' . ($w['warningcode'] ?? '') . ': ' . substr((string) ($w['message'] ?? ''), 0, 160);
        }
        return $result;
    }

    /**
     * The scenario (see the file's comment); every name is unique to the run.
     *
     * @return array step => ['answer' => ..., 'seen' => observations]
     */
    public function scenario(): array {
        global $DB;
        $this->run++;
        $tag = date('His') . '-' . $this->run . '-' . random_string(4);
        $tag = core_text::strtolower($tag);
        $domain = "zs-{$tag}.example";
        $out = [];
        $step = function (string $name, array $result, array $seen = []) use (&$out) {
            $out[$name] = ['answer' => $result['answer'], 'seen' => $seen];
            return $result['body'];
        };

        $info = $step('core_webservice_get_site_info', $r = $this->call('core_webservice_get_site_info'));
        $out['core_webservice_get_site_info']['seen'] = ['functions' => is_array($info) ? count($info['functions'] ?? []) : null];

        // Categories: one visible, one hidden by the admin afterwards.
        $body = $step('core_course_create_categories', $this->call('core_course_create_categories', ['categories' => [
            ['name' => "ZS {$tag}", 'parent' => 0, 'idnumber' => "zs-cat-{$tag}"],
            ['name' => "ZS hidden {$tag}", 'parent' => 0, 'idnumber' => "zs-hcat-{$tag}"],
        ]]));
        $catid = $DB->get_field('course_categories', 'id', ['idnumber' => "zs-cat-{$tag}"]);
        $hcatid = $DB->get_field('course_categories', 'id', ['idnumber' => "zs-hcat-{$tag}"]);
        if (!$catid) {
            $catid = $this->generator->create_category(['name' => "ZS {$tag}", 'idnumber' => "zs-cat-{$tag}"])->id;
        }
        if (!$hcatid) {
            $hcatid = $this->generator->create_category(['name' => "ZS hidden {$tag}", 'idnumber' => "zs-hcat-{$tag}"])->id;
        }
        core_course_category::get($hcatid, MUST_EXIST, true)->hide();

        $body = $step('core_course_get_categories', $r = $this->call('core_course_get_categories'));
        $bycat = [];
        foreach (is_array($body) ? $body : [] as $c) {
            $bycat[$c['id']] = $c;
        }
        $out['core_course_get_categories']['seen'] = [
            'category listed' => isset($bycat[$catid]),
            'category idnumber' => !empty($bycat[$catid]['idnumber']),
            'hidden category listed' => isset($bycat[$hcatid]),
        ];

        // Courses: one visible (in the visible category), one hidden (visible 0).
        $start = time() - 86400 * 30;
        $end = time() + 86400 * 300;
        $step('core_course_create_courses', $r = self::warned($this->call('core_course_create_courses', ['courses' => [
            ['fullname' => "ZS course {$tag}", 'shortname' => "zs-c-{$tag}", 'idnumber' => "zs-c-{$tag}",
                'categoryid' => $catid, 'startdate' => $start, 'enddate' => $end, 'visible' => 1],
            ['fullname' => "ZS hidden course {$tag}", 'shortname' => "zs-hc-{$tag}", 'idnumber' => "zs-hc-{$tag}",
                'categoryid' => $catid, 'startdate' => $start, 'enddate' => $end, 'visible' => 0],
        ]])));
        $course = $DB->get_record('course', ['idnumber' => "zs-c-{$tag}"]);
        $hcourse = $DB->get_record('course', ['idnumber' => "zs-hc-{$tag}"]);
        if (!$course) {
            $course = $this->generator->create_course(['fullname' => "ZS course {$tag}", 'shortname' => "zs-c-{$tag}",
                'idnumber' => "zs-c-{$tag}", 'category' => $catid]);
        }
        if (!$hcourse) {
            $hcourse = $this->generator->create_course(['fullname' => "ZS hidden course {$tag}",
                'shortname' => "zs-hc-{$tag}", 'idnumber' => "zs-hc-{$tag}", 'category' => $catid, 'visible' => 0]);
        }
        $out['core_course_create_courses']['seen'] = ['hidden course created hidden' => (int) $hcourse->visible === 0];
        // A course in the hidden category.
        $step('core_course_create_courses (hidden category)', self::warned($this->call('core_course_create_courses',
            ['courses' => [['fullname' => "ZS c3 {$tag}", 'shortname' => "zs-c3-{$tag}", 'idnumber' => "zs-c3-{$tag}",
                'categoryid' => $hcatid]]])));

        $body = $step('core_course_get_courses_by_field', $this->call('core_course_get_courses_by_field',
            ['field' => 'ids', 'value' => "{$course->id},{$hcourse->id}"]));
        $bycourse = [];
        foreach ($body['courses'] ?? [] as $c) {
            $bycourse[$c['id']] = $c;
        }
        $out['core_course_get_courses_by_field']['seen'] = [
            'course listed' => isset($bycourse[$course->id]),
            'course idnumber' => !empty($bycourse[$course->id]['idnumber']),
            'course startdate' => !empty($bycourse[$course->id]['startdate']),
            'course visible field' => isset($bycourse[$course->id]['visible']),
            'hidden course listed' => isset($bycourse[$hcourse->id]),
            'hidden course idnumber' => !empty($bycourse[$hcourse->id]['idnumber']),
        ];

        // Users.
        $users = [];
        foreach (['s1' => 'student one', 's2' => 'student two', 't1' => 'teacher one'] as $k => $name) {
            [$first, $last] = explode(' ', $name);
            $users[] = ['username' => "zs-{$k}-{$tag}", 'firstname' => ucfirst($first), 'lastname' => ucfirst($last),
                'email' => "{$k}-{$tag}@{$domain}", 'idnumber' => "zs-{$k}-{$tag}", 'auth' => 'manual', 'createpassword' => 1];
        }
        $step('core_user_create_users', $this->call('core_user_create_users', ['users' => $users]));
        $ids = [];
        foreach ($users as $u) {
            $id = $DB->get_field('user', 'id', ['username' => $u['username']]);
            if (!$id) {
                $id = $this->generator->create_user(['username' => $u['username'], 'firstname' => $u['firstname'],
                    'lastname' => $u['lastname'], 'email' => $u['email'], 'idnumber' => $u['idnumber']])->id;
            }
            $ids[substr($u['username'], 3, 2)] = (int) $id;
        }
        $step('core_user_update_users', $r = self::warned($this->call('core_user_update_users', ['users' => [
            ['id' => $ids['s1'], 'lastname' => 'Renamed', 'suspended' => 0, 'idnumber' => "zs-s1-{$tag}"],
        ]])));
        $out['core_user_update_users']['seen'] = ['updated' => $DB->get_field('user', 'lastname', ['id' => $ids['s1']]) === 'Renamed'];

        $body = $step('core_user_get_users_by_field (idnumber)', $this->call('core_user_get_users_by_field',
            ['field' => 'idnumber', 'values' => ["zs-s1-{$tag}", "zs-s2-{$tag}", "zs-t1-{$tag}"]]));
        $body = is_array($body) ? $body : [];
        $out['core_user_get_users_by_field (idnumber)']['seen'] = [
            'users' => count($body),
            'with idnumber' => count(array_filter(array_column($body, 'idnumber'))),
            'with email' => count(array_filter(array_column($body, 'email'))),
            'with username' => count(array_filter(array_column($body, 'username'))),
            'with firstname' => count(array_filter(array_column($body, 'firstname'))),
            'with suspended' => count(array_filter($body, static function ($u) {
                return array_key_exists('suspended', $u);
            })),
        ];
        $body = $step('core_user_get_users_by_field (email)', $this->call('core_user_get_users_by_field',
            ['field' => 'email', 'values' => ["s1-{$tag}@{$domain}", "s2-{$tag}@{$domain}", "t1-{$tag}@{$domain}"]]));
        $body = is_array($body) ? $body : [];
        $out['core_user_get_users_by_field (email)']['seen'] = [
            'users' => count($body),
            'with idnumber' => count(array_filter(array_column($body, 'idnumber'))),
        ];
        $body = $step('core_user_get_users (email %@domain)', $r = self::warned($this->call('core_user_get_users',
            ['criteria' => [['key' => 'email', 'value' => "%@{$domain}"]]])));
        $found = $body['users'] ?? [];
        $out['core_user_get_users (email %@domain)']['seen'] = [
            'users' => count($found),
            'with idnumber' => count(array_filter(array_column($found, 'idnumber'))),
            'with email' => count(array_filter(array_column($found, 'email'))),
            'with firstname' => count(array_filter(array_column($found, 'firstname'))),
            'with suspended' => count(array_filter($found, static function ($u) {
                return array_key_exists('suspended', $u);
            })),
        ];

        // The admin's part: groups, activities.
        $DB->update_record('course', (object) ['id' => $course->id, 'groupmode' => SEPARATEGROUPS, 'groupmodeforce' => 1]);
        rebuild_course_cache($course->id, true);
        $group = $this->generator->create_group(['courseid' => $course->id, 'name' => "G {$tag}"]);
        $assign = $this->generator->create_module('assign', ['course' => $course->id, 'name' => "Unit 1 {$tag}", 'grade' => 100]);
        $hidden = $this->generator->create_module('assign', ['course' => $course->id, 'name' => "Hidden {$tag}", 'grade' => 100,
            'visible' => 0]);
        $gbhidden = $this->generator->create_module('assign', ['course' => $course->id, 'name' => "GB hidden {$tag}",
            'grade' => 100]);
        $quiz = $this->generator->create_module('quiz', ['course' => $course->id, 'name' => "Quiz {$tag}", 'grade' => 10,
            'sumgrades' => 10]);

        // Enrolments: s1 student, s2 student suspended, t1 editing teacher; s1 also in the hidden course.
        $roles = $DB->get_records_menu('role', null, '', 'shortname, id');
        $step('enrol_manual_enrol_users', $this->call('enrol_manual_enrol_users', ['enrolments' => [
            ['roleid' => $roles['student'], 'userid' => $ids['s1'], 'courseid' => $course->id],
            ['roleid' => $roles['student'], 'userid' => $ids['s2'], 'courseid' => $course->id, 'suspend' => 1],
            ['roleid' => $roles['editingteacher'], 'userid' => $ids['t1'], 'courseid' => $course->id],
        ]]));
        $step('enrol_manual_enrol_users (hidden course)', $this->call('enrol_manual_enrol_users', ['enrolments' => [
            ['roleid' => $roles['student'], 'userid' => $ids['s1'], 'courseid' => $hcourse->id],
        ]]));
        $manual = enrol_get_plugin('manual');
        foreach ([[$course, 's1', 'student', 0], [$course, 's2', 'student', 1], [$course, 't1', 'editingteacher', 0],
                [$hcourse, 's1', 'student', 0]] as [$c, $k, $role, $suspended]) {
            if (!is_enrolled(context_course::instance($c->id), $ids[$k])) {
                $instance = $DB->get_record('enrol', ['courseid' => $c->id, 'enrol' => 'manual'], '*', MUST_EXIST);
                $manual->enrol_user($instance, $ids[$k], $roles[$role], 0, 0,
                    $suspended ? ENROL_USER_SUSPENDED : ENROL_USER_ACTIVE);
            }
        }
        groups_add_member($group->id, $ids['s1']);
        groups_add_member($group->id, $ids['s2']);

        // Grades: s1 and s2 on each assignment; the third's grade item hidden in the gradebook.
        foreach ([$assign, $hidden, $gbhidden] as $i => $instance) {
            $cm = get_coursemodule_from_instance('assign', $instance->id, $course->id, false, MUST_EXIST);
            $a = new assign(context_module::instance($cm->id), $cm, $course);
            foreach (['s1' => 75 + $i, 's2' => 60 + $i] as $k => $value) {
                $grade = $a->get_user_grade($ids[$k], true);
                $grade->grade = $value;
                $a->update_grade($grade);
            }
        }
        grade_update('mod/quiz', $course->id, 'mod', 'quiz', $quiz->id, 0,
            [$ids['s1'] => (object) ['userid' => $ids['s1'], 'rawgrade' => 8]]);
        $item = grade_item::fetch(['itemtype' => 'mod', 'itemmodule' => 'assign', 'iteminstance' => $gbhidden->id,
            'courseid' => $course->id]);
        $item->set_hidden(1, true);

        $body = $step('core_enrol_get_enrolled_users', $this->call('core_enrol_get_enrolled_users', [
            'courseid' => $course->id, 'options' => [['name' => 'onlyactive', 'value' => 0],
                ['name' => 'limitfrom', 'value' => 0], ['name' => 'limitnumber', 'value' => 100]]]));
        $body = is_array($body) ? $body : [];
        $out['core_enrol_get_enrolled_users']['seen'] = [
            'users' => count($body),
            'with roles' => count(array_filter(array_column($body, 'roles'))),
            'with email' => count(array_filter(array_column($body, 'email'))),
            'with idnumber' => count(array_filter(array_column($body, 'idnumber'))),
        ];
        $body = $step('core_enrol_get_enrolled_users (onlyactive)', $this->call('core_enrol_get_enrolled_users', [
            'courseid' => $course->id, 'options' => [['name' => 'onlyactive', 'value' => 1]]]));
        $out['core_enrol_get_enrolled_users (onlyactive)']['seen'] = ['users' => is_array($body) ? count($body) : null];

        $body = $step('gradereport_user_get_grade_items', $r = self::warned($this->call('gradereport_user_get_grade_items',
            ['courseid' => $course->id, 'userid' => 0])));
        $seen = ['users' => 0, 'assign items' => 0, 'Unit 1 graded' => 0, 'hidden activity items' => 0,
            'gradebook-hidden items' => 0, 'quiz items' => 0, 'course total items' => 0];
        foreach ($body['usergrades'] ?? [] as $usergrade) {
            $seen['users']++;
            foreach ($usergrade['gradeitems'] ?? [] as $gi) {
                if (($gi['itemmodule'] ?? '') === 'assign') {
                    $seen['assign items']++;
                    if ((int) $gi['iteminstance'] === (int) $assign->id && $gi['graderaw'] !== null) {
                        $seen['Unit 1 graded']++;
                    }
                    $seen['hidden activity items'] += (int) $gi['iteminstance'] === (int) $hidden->id ? 1 : 0;
                    $seen['gradebook-hidden items'] += (int) $gi['iteminstance'] === (int) $gbhidden->id ? 1 : 0;
                } else if (($gi['itemmodule'] ?? '') === 'quiz') {
                    $seen['quiz items']++;
                } else if (($gi['itemtype'] ?? '') === 'course') {
                    $seen['course total items']++;
                }
            }
        }
        $out['gradereport_user_get_grade_items']['seen'] = $seen;
        $body = $step('gradereport_user_get_grade_items (one user)', self::warned($this->call('gradereport_user_get_grade_items',
            ['courseid' => $course->id, 'userid' => $ids['s1']])));
        $items = $body['usergrades'][0]['gradeitems'] ?? [];
        $out['gradereport_user_get_grade_items (one user)']['seen'] = ['assign items' => count(array_filter($items,
            static function ($gi) {
                return ($gi['itemmodule'] ?? '') === 'assign';
            }))];

        $body = $step('core_course_get_contents', $this->call('core_course_get_contents', ['courseid' => $course->id]));
        $mods = [];
        foreach (is_array($body) ? $body : [] as $section) {
            foreach ($section['modules'] ?? [] as $m) {
                $mods[$m['instance'] . $m['modname']] = $m;
            }
        }
        $out['core_course_get_contents']['seen'] = [
            'assignment listed' => isset($mods[$assign->id . 'assign']),
            'assignment uservisible' => !empty($mods[$assign->id . 'assign']['uservisible']),
            'hidden assignment listed' => isset($mods[$hidden->id . 'assign']),
            'quiz uservisible' => !empty($mods[$quiz->id . 'quiz']['uservisible']),
        ];
        $step('core_course_get_contents (hidden course)', $this->call('core_course_get_contents', ['courseid' => $hcourse->id]));

        // Update: every field the pipeline sends, each changed; the course moves to the hidden category and is hidden.
        $step('core_course_update_courses', self::warned($this->call('core_course_update_courses', ['courses' => [
            ['id' => $course->id, 'fullname' => "ZS course {$tag} renamed", 'shortname' => "zs-c-{$tag}-r",
                'idnumber' => "zs-c-{$tag}-r", 'categoryid' => $hcatid, 'startdate' => $start + 86400,
                'enddate' => $end + 86400, 'visible' => 0],
        ]])));
        $after = $DB->get_record('course', ['id' => $course->id]);
        $out['core_course_update_courses']['seen'] = [
            'fullname' => $after->fullname === "ZS course {$tag} renamed",
            'shortname' => $after->shortname === "zs-c-{$tag}-r",
            'idnumber' => $after->idnumber === "zs-c-{$tag}-r",
            'category' => (int) $after->category === (int) $hcatid,
            'visible' => (int) $after->visible === 0,
            'startdate' => (int) $after->startdate === $start + 86400,
        ];
        // Each field alone, on the hidden course, to name the capability each one needs.
        foreach (['fullname' => "ZS hc {$tag} renamed", 'shortname' => "zs-hc-{$tag}-r", 'idnumber' => "zs-hc-{$tag}-r",
                'categoryid' => $hcatid, 'visible' => 1] as $field => $value) {
            $step("core_course_update_courses ({$field})", self::warned($this->call('core_course_update_courses',
                ['courses' => [['id' => $hcourse->id, $field => $value]]])));
        }

        $step('enrol_manual_unenrol_users', $this->call('enrol_manual_unenrol_users', ['enrolments' => [
            ['userid' => $ids['t1'], 'courseid' => $course->id, 'roleid' => $roles['editingteacher']],
        ]]));
        $out['enrol_manual_unenrol_users']['seen'] = ['teacher unenrolled' => !is_enrolled(context_course::instance($course->id),
            $ids['t1'], '', false)];
        return $out;
    }
}
