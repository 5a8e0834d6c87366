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
 * Small stand-ins for the parts of Moodle that local_zohosync calls, so that its classes run under
 * plain PHPUnit without a Moodle site.
 *
 * Each stub keeps the real API's name, signature and observable behaviour as far as the plugin
 * relies on it (adhoc_task keeps its custom data as a JSON string and get_custom_data() decodes it
 * to objects; get_config() without a name answers an object; debugging() prints only at or above
 * $CFG->debug; the \curl stub answers like lib/filelib.php's: the body, get_info()['http_code'],
 * get_errno(), public $error). What the plugin did is recorded in {@see zohosync_stub}.
 *
 * Not for a Moodle site: these classes would clash with Moodle's own. The suite's files are named
 * *Test.php, which Moodle's PHPUnit configuration (suffix _test.php) never collects.
 *
 * @package    local_zohosync
 * @copyright  2026 sync_pipelines contributors
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

namespace {

    define('MOODLE_INTERNAL', true);

    define('DEBUG_NONE', 0);
    define('DEBUG_MINIMAL', E_ERROR | E_PARSE);
    define('DEBUG_NORMAL', E_ERROR | E_PARSE | E_WARNING | E_NOTICE);
    define('DEBUG_ALL', 30719); // E_ALL & ~E_STRICT.
    define('DEBUG_DEVELOPER', 32767); // E_ALL | E_STRICT.

    define('IGNORE_MISSING', 0);
    define('IGNORE_MULTIPLE', 1);
    define('MUST_EXIST', 2);

    define('MATURITY_ALPHA', 50);
    define('MATURITY_BETA', 100);
    define('MATURITY_RC', 150);
    define('MATURITY_STABLE', 200);

    define('PARAM_ALPHANUMEXT', 'alphanumext');
    define('PARAM_INT', 'int');
    define('PARAM_RAW', 'raw');
    define('PARAM_RAW_TRIMMED', 'raw_trimmed');
    define('PARAM_TEXT', 'text');
    define('PARAM_URL', 'url');

    /**
     * What the plugin did, and what the stubs answer. Reset before every test.
     */
    final class zohosync_stub {
        /** @var array<string, array<string, mixed>> plugin => name => value (get_config). */
        public static $config = [];
        /** @var string[] Every line mtrace() and debugging() printed. */
        public static $log = [];
        /** @var array[] Queued adhoc tasks: ['classname' => ..., 'customdata' => JSON string]. */
        public static $queue = [];
        /** @var array[] Every request the \curl stub was asked to make. */
        public static $requests = [];
        /** @var array[] Answers for the next requests: ['status' => int, 'body' => string, 'errno' => int, 'error' => string]. */
        public static $responses = [];
        /** @var string[] The ids \core\uuid::generate() hands out next (random v4 once empty). */
        public static $uuids = [];
        /** @var array<string, array<int|string, object>> table => id => record ($DB->get_record). */
        public static $tables = [];
        /** @var bool Whether \core\task\manager::queue_adhoc_task() fails (throws). */
        public static $queuefails = false;

        /**
         * Forget everything.
         */
        public static function reset(): void {
            global $CFG, $DB;
            self::$config = [];
            self::$log = [];
            self::$queue = [];
            self::$requests = [];
            self::$responses = [];
            self::$uuids = [];
            self::$tables = [];
            self::$queuefails = false;
            $CFG = new stdClass();
            $CFG->debug = DEBUG_NORMAL;
            $CFG->libdir = __DIR__ . '/lib';
            $DB = new zohosync_db_stub();
        }

        /**
         * Everything logged so far, one line per entry.
         *
         * @return string
         */
        public static function logged(): string {
            return implode("\n", self::$log);
        }
    }

    /**
     * $DB: get_record(), insert_record(), delete_records() and the few selects the plugin makes, over
     * {@see zohosync_stub::$tables} (task_adhoc is {@see zohosync_stub::$queue}).
     */
    final class zohosync_db_stub {
        /** @var array[] Every get_record() call: [table, conditions, fields, strictness]. */
        public $calls = [];

        /** @var int The last id insert_record() handed out (ids are never reused, as in a database sequence). */
        public $lastid = 0;

        /**
         * @param string $table
         * @param object|array $record
         * @return int the new id.
         */
        public function insert_record($table, $record) {
            $record = (object) (array) $record;
            foreach (get_object_vars($record) as $field => $value) {
                if ($value !== null && !is_scalar($value)) {
                    throw new coding_exception("insert_record: {$table}.{$field} is not a scalar");
                }
            }
            $record->id = ++$this->lastid;
            zohosync_stub::$tables[$table][(string) $record->id] = $record;
            return $record->id;
        }

        /**
         * @param string $table
         * @param array $conditions only ['id' => ...] is supported.
         * @return bool
         */
        public function delete_records($table, array $conditions) {
            if (array_keys($conditions) !== ['id']) {
                throw new coding_exception('the stub $DB only deletes records by id');
            }
            unset(zohosync_stub::$tables[$table][(string) $conditions['id']]);
            return true;
        }

        /**
         * @param string $table
         * @param string $field only 'id'.
         * @param array $values
         * @return bool
         */
        public function delete_records_list($table, $field, array $values) {
            if ($field !== 'id') {
                throw new coding_exception('the stub $DB only deletes lists of ids');
            }
            foreach ($values as $value) {
                unset(zohosync_stub::$tables[$table][(string) $value]);
            }
            return true;
        }

        /**
         * The two selects the plugin makes: task_adhoc customdata by classname, and ids older than a time.
         *
         * @param string $table
         * @param string $return
         * @param string $select
         * @param array $params
         * @return array
         */
        public function get_fieldset_select($table, $return, $select, array $params = []) {
            if ($table === 'task_adhoc' && $return === 'customdata' && $select === 'classname = ?') {
                $out = [];
                foreach (zohosync_stub::$queue as $task) {
                    if ($task['classname'] === $params[0]) {
                        $out[] = $task['customdata'];
                    }
                }
                return $out;
            }
            if ($return === 'id' && $select === 'timecreated < ?') {
                $out = [];
                foreach (zohosync_stub::$tables[$table] ?? [] as $record) {
                    if ((int) $record->timecreated < (int) $params[0]) {
                        $out[] = (string) $record->id;
                    }
                }
                return $out;
            }
            throw new coding_exception("the stub \$DB cannot select {$return} from {$table} where {$select}");
        }

        /**
         * @param string $table
         * @param array $conditions only ['id' => ...] is supported.
         * @param string $fields '*' or a comma-separated list.
         * @param int $strictness IGNORE_MISSING or MUST_EXIST.
         * @return stdClass|false
         */
        public function get_record($table, array $conditions, $fields = '*', $strictness = IGNORE_MISSING) {
            $this->calls[] = [$table, $conditions, $fields, $strictness];
            if (array_keys($conditions) !== ['id']) {
                throw new coding_exception('the stub $DB only looks records up by id');
            }
            $record = zohosync_stub::$tables[$table][(string) $conditions['id']] ?? null;
            if ($record === null) {
                if ($strictness === MUST_EXIST) {
                    throw new dml_missing_record_exception($table);
                }
                return false;
            }
            if ($fields === '*') {
                return clone $record;
            }
            $out = new stdClass();
            foreach (array_map('trim', explode(',', $fields)) as $field) {
                $out->$field = $record->$field;
            }
            return $out;
        }
    }

    /**
     * Moodle's base exception: the message is the language string.
     */
    class moodle_exception extends Exception {
        /** @var string */
        public $errorcode;
        /** @var string */
        public $module;
        /** @var mixed */
        public $a;
        /** @var string */
        public $link;
        /** @var string|null */
        public $debuginfo;

        /**
         * @param string $errorcode
         * @param string $module
         * @param string $link
         * @param mixed $a
         * @param string|null $debuginfo
         */
        public function __construct($errorcode, $module = '', $link = '', $a = null, $debuginfo = null) {
            $this->errorcode = $errorcode;
            $this->module = $module;
            $this->link = $link;
            $this->a = $a;
            $this->debuginfo = $debuginfo;
            parent::__construct(get_string($errorcode, $module, $a));
        }
    }

    /**
     * A database write failed.
     */
    class dml_write_exception extends moodle_exception {
        /**
         * @param string $table
         */
        public function __construct($table) {
            Exception::__construct("Error writing to database ({$table})");
        }
    }

    /**
     * Programming error.
     */
    class coding_exception extends moodle_exception {
        /**
         * @param string $hint
         * @param string|null $debuginfo
         */
        public function __construct($hint, $debuginfo = null) {
            Exception::__construct('Coding error detected, it must be fixed by a programmer: ' . $hint);
        }
    }

    /**
     * A record that must exist does not.
     */
    class dml_missing_record_exception extends moodle_exception {
        /**
         * @param string $table
         */
        public function __construct($table) {
            Exception::__construct("Can't find data record in database table {$table}.");
        }
    }

    /**
     * get_config(): one setting, or all of a plugin's as an object (false for a missing one).
     *
     * @param string $plugin
     * @param string|null $name
     * @return mixed
     */
    function get_config($plugin, $name = null) {
        $settings = zohosync_stub::$config[$plugin] ?? [];
        if ($name === null) {
            return (object) $settings;
        }
        return array_key_exists($name, $settings) ? $settings[$name] : false;
    }

    /**
     * set_config(), for the tests; null unsets.
     *
     * @param string $name
     * @param mixed $value
     * @param string $plugin
     * @return bool
     */
    function set_config($name, $value, $plugin) {
        if ($value === null) {
            unset(zohosync_stub::$config[$plugin][$name]);
        } else {
            zohosync_stub::$config[$plugin][$name] = (string) $value;
        }
        return true;
    }

    /**
     * The plugin's English strings, read from its lang file.
     *
     * @return array<string, string>
     */
    function zohosync_strings(): array {
        static $strings = null;
        if ($strings === null) {
            $string = [];
            require(dirname(__DIR__, 2) . '/lang/en/local_zohosync.php');
            $strings = $string;
        }
        return $strings;
    }

    /**
     * get_string() for local_zohosync (other components answer "[[identifier]]"); {$a} and {$a->x} are filled.
     *
     * @param string $identifier
     * @param string $component
     * @param mixed $a
     * @return string
     */
    function get_string($identifier, $component = '', $a = null) {
        if ($component !== 'local_zohosync') {
            return "[[{$identifier}]]";
        }
        $strings = zohosync_strings();
        if (!array_key_exists($identifier, $strings)) {
            throw new coding_exception("missing string {$identifier} in local_zohosync");
        }
        $text = $strings[$identifier];
        if (is_object($a) || is_array($a)) {
            foreach ((array) $a as $key => $value) {
                $text = str_replace('{$a->' . $key . '}', (string) $value, $text);
            }
        } else if ($a !== null) {
            $text = str_replace('{$a}', (string) $a, $text);
        }
        return $text;
    }

    /**
     * A string fetched when it is printed.
     */
    class lang_string {
        /** @var string */
        public $identifier;
        /** @var string */
        public $component;
        /** @var mixed */
        public $a;

        /**
         * @param string $identifier
         * @param string $component
         * @param mixed $a
         */
        public function __construct($identifier, $component = '', $a = null) {
            $this->identifier = $identifier;
            $this->component = $component;
            $this->a = $a;
        }

        /**
         * @return string
         */
        public function __toString() {
            return get_string($this->identifier, $this->component, $this->a);
        }
    }

    /**
     * mtrace(): recorded (cron prints it to the task log).
     *
     * @param string $string
     * @param string $eol
     */
    function mtrace($string, $eol = "\n") {
        zohosync_stub::$log[] = 'mtrace: ' . $string;
    }

    /**
     * debugging(): recorded only when $CFG->debug is at least $level, as in Moodle.
     *
     * @param string $message
     * @param int $level
     * @param array|null $backtrace
     * @return bool whether it was shown.
     */
    function debugging($message = '', $level = DEBUG_NORMAL, $backtrace = null) {
        global $CFG;
        if (empty($CFG->debug) || $CFG->debug < $level) {
            return false;
        }
        zohosync_stub::$log[] = 'debugging: ' . $message;
        return true;
    }

    /**
     * A settings page.
     */
    class admin_settingpage {
        /** @var string */
        public $name;
        /** @var string|lang_string */
        public $visiblename;
        /** @var admin_setting[] by full name ('local_zohosync/secret'). */
        public $settings = [];

        /**
         * @param string $name
         * @param string|lang_string $visiblename
         */
        public function __construct($name, $visiblename) {
            $this->name = $name;
            $this->visiblename = $visiblename;
        }

        /**
         * @param admin_setting $setting
         * @return bool
         */
        public function add($setting) {
            $this->settings[$setting->plugin . '/' . $setting->name] = $setting;
            return true;
        }
    }

    /**
     * $ADMIN.
     */
    class admin_root {
        /** @var bool */
        public $fulltree = true;
        /** @var array[] [parent, page] */
        public $added = [];

        /**
         * @param string $parent
         * @param admin_settingpage $page
         * @return bool
         */
        public function add($parent, $page) {
            $this->added[] = [$parent, $page];
            return true;
        }
    }

    /**
     * A setting: 'plugin/name' splits into plugin and name, as in Moodle.
     */
    abstract class admin_setting {
        /** @var string */
        public $name;
        /** @var string|null */
        public $plugin;
        /** @var string|lang_string */
        public $visiblename;
        /** @var string|lang_string */
        public $description;
        /** @var mixed */
        public $defaultsetting;

        /**
         * @param string $name
         * @param string|lang_string $visiblename
         * @param string|lang_string $description
         * @param mixed $defaultsetting
         */
        public function __construct($name, $visiblename, $description, $defaultsetting) {
            $parts = explode('/', $name);
            if (count($parts) === 2) {
                [$this->plugin, $this->name] = $parts;
            } else {
                $this->name = $name;
            }
            $this->visiblename = $visiblename;
            $this->description = $description;
            $this->defaultsetting = $defaultsetting;
        }
    }

    /**
     * A heading.
     */
    class admin_setting_heading extends admin_setting {
        /**
         * @param string $name
         * @param string|lang_string $heading
         * @param string|lang_string $information
         */
        public function __construct($name, $heading, $information) {
            parent::__construct($name, $heading, $information, '');
        }
    }

    /**
     * A text field.
     */
    class admin_setting_configtext extends admin_setting {
        /** @var string */
        public $paramtype;
        /** @var int|null */
        public $size;

        /**
         * @param string $name
         * @param string|lang_string $visiblename
         * @param string|lang_string $description
         * @param mixed $defaultsetting
         * @param string $paramtype
         * @param int|null $size
         */
        public function __construct($name, $visiblename, $description, $defaultsetting, $paramtype = PARAM_RAW,
                $size = null) {
            $this->paramtype = $paramtype;
            $this->size = $size;
            parent::__construct($name, $visiblename, $description, $defaultsetting);
        }

        /**
         * @param string $data
         * @return true|string
         */
        public function validate($data) {
            return true;
        }
    }

    /**
     * A password field with a "reveal" toggle.
     */
    class admin_setting_configpasswordunmask extends admin_setting_configtext {
        /**
         * @param string $name
         * @param string|lang_string $visiblename
         * @param string|lang_string $description
         * @param string $defaultsetting
         */
        public function __construct($name, $visiblename, $description, $defaultsetting) {
            parent::__construct($name, $visiblename, $description, $defaultsetting, PARAM_RAW, 30);
        }
    }

    /**
     * Checkboxes, stored as the comma-separated keys of the ticked ones.
     */
    class admin_setting_configmulticheckbox extends admin_setting {
        /** @var array */
        public $choices;

        /**
         * @param string $name
         * @param string|lang_string $visiblename
         * @param string|lang_string $description
         * @param array $defaultsetting key => 1 for the ticked ones.
         * @param array $choices key => label.
         */
        public function __construct($name, $visiblename, $description, $defaultsetting, $choices) {
            $this->choices = $choices;
            parent::__construct($name, $visiblename, $description, $defaultsetting);
        }
    }

    /**
     * A context, for the privacy provider's signatures.
     */
    abstract class context {
    }
}

namespace core {

    /**
     * V4 UUIDs; the tests set the next ones in {@see \zohosync_stub::$uuids}.
     */
    class uuid {
        /**
         * @return string
         */
        public static function generate() {
            if (\zohosync_stub::$uuids) {
                return array_shift(\zohosync_stub::$uuids);
            }
            $data = random_bytes(16);
            $data[6] = chr((ord($data[6]) & 0x0f) | 0x40);
            $data[8] = chr((ord($data[8]) & 0x3f) | 0x80);
            return vsprintf('%s%s-%s-%s-%s-%s%s%s', str_split(bin2hex($data), 4));
        }
    }
}

namespace core\event {

    /**
     * An event: get_data() answers the data it was made with.
     *
     * As in Moodle, init() sets what the event class fixes (objecttable, crud, edulevel) and
     * validate_data() refuses data the real class refuses: a test's data that contradicts either is
     * not data Moodle could raise, and is refused here too.
     */
    abstract class base {
        /** @var int Moodle's \core\event\base::LEVEL_OTHER. */
        const LEVEL_OTHER = 0;
        /** @var int Moodle's \core\event\base::LEVEL_TEACHING. */
        const LEVEL_TEACHING = 1;
        /** @var int Moodle's \core\event\base::LEVEL_PARTICIPATING. */
        const LEVEL_PARTICIPATING = 2;

        /** @var array */
        protected $data = [];

        /**
         * An event whose get_data() is $data (eventname filled in from the class when absent).
         *
         * @param array $data
         * @return static
         */
        public static function from_data(array $data) {
            $event = new static();
            $event->init();
            foreach ($event->data as $name => $value) {
                if (array_key_exists($name, $data) && $data[$name] !== $value) {
                    throw new \coding_exception(static::class . " has {$name} " . var_export($value, true) .
                        ', not ' . var_export($data[$name], true));
                }
            }
            $event->data = $data + $event->data + ['eventname' => '\\' . static::class];
            $event->validate_data();
            return $event;
        }

        /**
         * What the event class fixes (the real classes' init()).
         */
        protected function init() {
        }

        /**
         * Refuse data the real class refuses.
         */
        protected function validate_data() {
        }

        /**
         * @return array
         */
        final public function get_data() {
            return $this->data;
        }

        /**
         * @param string $name
         * @return mixed
         */
        public function __get($name) {
            return $this->data[$name] ?? null;
        }
    }

    /** \core\event\user_created. */
    class user_created extends base {
    }

    /** \core\event\user_updated. */
    class user_updated extends base {
    }

    /** \core\event\user_enrolment_created. */
    class user_enrolment_created extends base {
    }

    /** \core\event\user_enrolment_deleted. */
    class user_enrolment_deleted extends base {
    }

    /**
     * \core\event\user_enrolment_updated (lib/classes/event/user_enrolment_updated.php): an enrolment
     * suspended, re-activated or its dates changed; raised by enrol_plugin::update_user_enrol()
     * (lib/enrollib.php) with objectid = the user_enrolments id, courseid, the course context,
     * relateduserid = the enrolled user and other = ['enrol' => the enrolment method].
     */
    class user_enrolment_updated extends base {
        /**
         * As Moodle 4.5's init().
         */
        protected function init() {
            $this->data['objecttable'] = 'user_enrolments';
            $this->data['crud'] = 'u';
            $this->data['edulevel'] = self::LEVEL_OTHER;
        }

        /**
         * As Moodle 4.5's validate_data().
         */
        protected function validate_data() {
            if (!isset($this->data['other']['enrol'])) {
                throw new \coding_exception('The \'enrol\' value must be set in other.');
            }
            if (!isset($this->data['relateduserid'])) {
                throw new \coding_exception('The \'relateduserid\' must be set.');
            }
        }
    }

    /** \core\event\user_graded. */
    class user_graded extends base {
    }

    /**
     * \core\event\course_updated (lib/classes/event/course_updated.php): a course edited, renamed,
     * moved or hidden; raised by update_course() and move_courses() (course/lib.php) with objectid =
     * the course id, the course context (so courseid is the course too), no relateduserid, and other =
     * ['shortname', 'fullname', 'updatedfields' => field => new value].
     */
    class course_updated extends base {
        /**
         * As Moodle 4.5's init().
         */
        protected function init() {
            $this->data['objecttable'] = 'course';
            $this->data['crud'] = 'u';
            $this->data['edulevel'] = self::LEVEL_TEACHING;
        }
    }

    /** An event the plugin does not forward. */
    class user_loggedin extends base {
    }
}

namespace core\task {

    /**
     * The common part of tasks.
     */
    abstract class task_base {
        /** @var string */
        private $component = '';

        /**
         * @param string $component
         */
        public function set_component($component) {
            $this->component = $component;
        }

        /**
         * @return string
         */
        public function get_component() {
            return $this->component;
        }

        /**
         * Do the job.
         */
        abstract public function execute();

        /**
         * @return string
         */
        abstract public function get_name();
    }

    /**
     * A scheduled task.
     */
    abstract class scheduled_task extends task_base {
    }

    /**
     * An adhoc task: custom data is kept as JSON and decoded to objects, as in lib/classes/task/adhoc_task.php.
     */
    abstract class adhoc_task extends task_base {
        /** @var string */
        private $customdata = '';

        /**
         * @param mixed $customdata anything json_encode() takes.
         */
        public function set_custom_data($customdata) {
            $this->customdata = json_encode($customdata);
        }

        /**
         * @param string $customdata JSON.
         */
        public function set_custom_data_as_string($customdata) {
            $this->customdata = $customdata;
        }

        /**
         * @return mixed
         */
        public function get_custom_data() {
            return json_decode($this->customdata);
        }

        /**
         * @return string
         */
        public function get_custom_data_as_string() {
            return $this->customdata;
        }
    }

    /**
     * The task manager: queue_adhoc_task() stores the task's class and custom data, as the task_adhoc table does.
     */
    class manager {
        /**
         * @param adhoc_task $task
         * @param bool $checkforexisting
         * @return int the new task's id.
         */
        public static function queue_adhoc_task(adhoc_task $task, $checkforexisting = false) {
            if (\zohosync_stub::$queuefails) {
                throw new \dml_write_exception('task_adhoc');
            }
            \zohosync_stub::$queue[] = [
                'classname' => '\\' . get_class($task),
                'customdata' => $task->get_custom_data_as_string(),
            ];
            return count(\zohosync_stub::$queue);
        }
    }
}

namespace core_privacy\local\metadata {

    /**
     * A component that stores or sends personal data describes it.
     */
    interface provider {
        /**
         * @param collection $collection
         * @return collection
         */
        public static function get_metadata(collection $collection): collection;
    }

    /**
     * A component that holds no personal data says why.
     */
    interface null_provider {
        /**
         * @return string
         */
        public static function get_reason(): string;
    }

    /**
     * The metadata of one component.
     */
    class collection {
        /** @var string */
        public $component;
        /** @var array[] ['type' => ..., 'name' => ..., 'fields' => ..., 'summary' => ...] */
        public $items = [];

        /**
         * @param string $component
         */
        public function __construct($component) {
            $this->component = $component;
        }

        /**
         * @param string $name
         * @param array $privacyfields field => language string id.
         * @param string $summary language string id.
         * @return self
         */
        public function add_external_location_link($name, array $privacyfields, $summary = '') {
            $this->items[] = ['type' => 'external_location', 'name' => $name, 'fields' => $privacyfields,
                'summary' => $summary];
            return $this;
        }

        /**
         * @param string $name
         * @param array $privacyfields
         * @param string $summary
         * @return self
         */
        public function add_database_table($name, array $privacyfields, $summary = '') {
            $this->items[] = ['type' => 'database_table', 'name' => $name, 'fields' => $privacyfields,
                'summary' => $summary];
            return $this;
        }
    }
}

namespace core_privacy\local\request {

    /** Marker: the component answers requests. */
    interface data_provider {
    }

    /** Marker: answered by core. */
    interface core_data_provider extends data_provider {
    }

    /**
     * Finds, exports and deletes one user's data.
     */
    interface core_user_data_provider extends core_data_provider {
        /**
         * @param int $userid
         * @return contextlist
         */
        public static function get_contexts_for_userid(int $userid): contextlist;

        /**
         * @param approved_contextlist $contextlist
         */
        public static function export_user_data(approved_contextlist $contextlist);

        /**
         * @param \context $context
         */
        public static function delete_data_for_all_users_in_context(\context $context);

        /**
         * @param approved_contextlist $contextlist
         */
        public static function delete_data_for_user(approved_contextlist $contextlist);
    }

    /**
     * Finds and deletes the users of a context.
     */
    interface core_userlist_provider {
        /**
         * @param userlist $userlist
         */
        public static function get_users_in_context(userlist $userlist);

        /**
         * @param approved_userlist $userlist
         */
        public static function delete_data_for_users(approved_userlist $userlist);
    }

    /**
     * Contexts holding a user's data.
     */
    class contextlist {
        /** @var int[] */
        protected $contextids = [];

        /**
         * @return int[]
         */
        public function get_contextids() {
            return $this->contextids;
        }
    }

    /**
     * Contexts approved for export or deletion.
     */
    class approved_contextlist extends contextlist {
    }

    /**
     * Users holding data in a context.
     */
    class userlist {
        /** @var int[] */
        protected $userids = [];

        /**
         * @return int[]
         */
        public function get_userids() {
            return $this->userids;
        }
    }

    /**
     * Users approved for deletion.
     */
    class approved_userlist extends userlist {
    }
}

namespace core_privacy\local\request\plugin {

    /**
     * A plugin that answers requests itself.
     */
    interface provider extends \core_privacy\local\request\core_user_data_provider {
    }
}
