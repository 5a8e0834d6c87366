<?php
// Adds an assignment to a course of a Moodle test site, as a teacher would (no web service can):
// for `make moodle-acceptance` (the unit assessment that gets the unit's BTEC rubric). Prints
// {"cmid": ..., "assignmentid": ...}. Runs on the Moodle server, as the site's admin; test sites only.
// Usage: php scripts/moodle_add_assignment.php <moodle dir> <course id> <name>
define('CLI_SCRIPT', true);
if ($argc < 4) {
    fwrite(STDERR, "usage: php moodle_add_assignment.php <moodle dir> <course id> <name>\n");
    exit(2);
}
[$script, $moodledir, $courseid, $name] = $argv;
require($moodledir . '/config.php');
require_once($CFG->dirroot . '/lib/phpunit/classes/util.php');
require_once($CFG->dirroot . '/mod/assign/locallib.php');
\core\session\manager::set_user(get_admin());
$course = get_course((int)$courseid);
$gen = testing_util::get_data_generator();
$assign = $gen->create_module('assign', [
    'course' => $course->id, 'name' => $name, 'intro' => 'Assessed against the unit\'s BTEC criteria',
    'introformat' => 1, 'grade' => 100, 'attemptreopenmethod' => 'manual', 'maxattempts' => -1,
    'submissiondrafts' => 0, 'sendstudentnotifications' => 0, 'assignfeedback_comments_enabled' => 1,
    'assignsubmission_onlinetext_enabled' => 1,
]);
$cm = get_coursemodule_from_instance('assign', $assign->id, $course->id, false, MUST_EXIST);
echo json_encode(['cmid' => (int)$cm->id, 'assignmentid' => (int)$assign->id]), "\n";
