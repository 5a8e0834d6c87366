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
 * The files Moodle reads itself: version.php, db/events.php, settings.php, the language strings,
 * and the privacy provider.
 *
 * @package    local_zohosync
 * @copyright  2026 sync_pipelines contributors
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

use local_zohosync\admin\setting_receiverurl;
use local_zohosync\config;
use local_zohosync\privacy\provider;

/**
 * @covers \local_zohosync\privacy\provider
 * @covers \local_zohosync\admin\setting_receiverurl
 * @covers \local_zohosync\config
 */
final class PluginFilesTest extends ZohosyncTestCase {

    /** @var string The plugin's folder. */
    private const PLUGIN = __DIR__ . '/..';

    public function test_version_targets_moodle_4_1_to_4_5(): void {
        $plugin = new stdClass();
        require(self::PLUGIN . '/version.php');
        $this->assertSame('local_zohosync', $plugin->component);
        $this->assertMatchesRegularExpression('/^20\d{8}$/', (string) $plugin->version);
        $this->assertSame(2022112800, $plugin->requires, 'Moodle 4.1');
        $this->assertSame([401, 405], $plugin->supported);
        $this->assertContains($plugin->maturity, [MATURITY_ALPHA, MATURITY_BETA, MATURITY_RC, MATURITY_STABLE]);
    }

    public function test_the_seven_events_are_observed_after_commit(): void {
        $observers = null;
        require(self::PLUGIN . '/db/events.php');
        $this->assertSame(array_values(config::EVENTS), array_column($observers, 'eventname'));
        $this->assertCount(7, $observers);
        foreach ($observers as $observer) {
            $this->assertFalse($observer['internal'], "{$observer['eventname']} must be observed after commit");
            $this->assertSame('\local_zohosync\observer::queue_delivery', $observer['callback']);
            $this->assertTrue(is_callable(ltrim($observer['callback'], '\\')));
            $this->assertTrue(class_exists($observer['eventname']), 'the stubs know the event class');
        }
    }

    public function test_settings(): void {
        $hassiteconfig = true;
        $ADMIN = new admin_root();
        require(self::PLUGIN . '/settings.php');

        [[$parent, $page]] = $ADMIN->added;
        $this->assertSame('localplugins', $parent);
        $this->assertSame('local_zohosync', $page->name);
        $this->assertSame('Zoho sync webhooks', (string) $page->visiblename);
        $this->assertSame(
            ['local_zohosync/receiverheading', 'local_zohosync/receiverurl', 'local_zohosync/tenant', 'local_zohosync/secret',
                'local_zohosync/events', 'local_zohosync/timeout'],
            array_keys($page->settings)
        );

        $url = $page->settings['local_zohosync/receiverurl'];
        $this->assertInstanceOf(setting_receiverurl::class, $url);
        $this->assertSame('', $url->defaultsetting);

        $tenant = $page->settings['local_zohosync/tenant'];
        $this->assertSame(PARAM_ALPHANUMEXT, $tenant->paramtype);

        $secret = $page->settings['local_zohosync/secret'];
        $this->assertInstanceOf(admin_setting_configpasswordunmask::class, $secret, 'the secret is a password field');
        $this->assertSame('', $secret->defaultsetting);

        $events = $page->settings['local_zohosync/events'];
        $this->assertInstanceOf(admin_setting_configmulticheckbox::class, $events);
        $this->assertSame(array_keys(config::EVENTS), array_keys($events->choices));
        $this->assertSame(array_fill_keys(array_keys(config::EVENTS), 1), $events->defaultsetting, 'every event on by default');

        $timeout = $page->settings['local_zohosync/timeout'];
        $this->assertSame(PARAM_INT, $timeout->paramtype);
        $this->assertSame(config::DEFAULT_TIMEOUT, $timeout->defaultsetting);

        foreach ($page->settings as $setting) {
            $this->assertNotSame('', (string) $setting->visiblename);
            $this->assertNotSame('', (string) $setting->description);
        }
        foreach ($events->choices as $label) {
            $this->assertNotSame('', (string) $label);
        }
    }

    public function test_settings_are_not_built_without_site_config(): void {
        $hassiteconfig = false;
        $ADMIN = new admin_root();
        require(self::PLUGIN . '/settings.php');
        $this->assertSame([], $ADMIN->added);
    }

    /**
     * @return array[]
     */
    public function receiver_urls(): array {
        return [
            'empty (nothing is sent)' => ['', true],
            'https' => ['https://sync.school.example', true],
            'private host with port and prefix' => ['http://sync-service:8780/school-a/', true],
            'not a URL' => ['sync.school.example', false],
            'ftp' => ['ftp://sync.school.example', false],
            'query' => ['https://sync.school.example/?x=1', false],
            'credentials' => ['https://u:p@sync.school.example', false],
            'the endpoint itself' => ['https://sync.school.example/v1/webhooks/moodle/demo_school', false],
        ];
    }

    /**
     * @dataProvider receiver_urls
     * @param string $url
     * @param bool $valid
     */
    public function test_the_receiver_url_setting_refuses_what_deliveries_could_not_use(string $url, bool $valid): void {
        $setting = new setting_receiverurl('local_zohosync/receiverurl', 'URL', 'description');
        $result = $setting->validate($url);
        if ($valid) {
            $this->assertTrue($result);
        } else {
            $this->assertIsString($result);
            $this->assertStringStartsWith('This URL cannot be used: the receiver URL', $result);
        }
    }

    public function test_language_strings_are_sorted_and_every_used_one_exists(): void {
        $strings = zohosync_strings();
        $keys = array_keys($strings);
        $sorted = $keys;
        sort($sorted, SORT_STRING);
        $this->assertSame($sorted, $keys, 'Moodle wants the strings in alphabetical order');

        $used = [];
        $files = new RecursiveIteratorIterator(new RecursiveDirectoryIterator(self::PLUGIN . '/classes'));
        $sources = [self::PLUGIN . '/settings.php'];
        foreach ($files as $file) {
            if ($file->isFile() && substr($file->getFilename(), -4) === '.php') {
                $sources[] = $file->getPathname();
            }
        }
        foreach ($sources as $source) {
            preg_match_all("/'((?:privacy:metadata:[a-z_:]+)|[a-z_]+)', 'local_zohosync'/", file_get_contents($source), $matches);
            $used = array_merge($used, $matches[1]);
            preg_match_all("/'(privacy:metadata:[a-z_:]+)'/", file_get_contents($source), $matches);
            $used = array_merge($used, $matches[1]);
        }
        foreach (array_keys(config::EVENTS) as $key) {
            $used[] = 'event_' . $key;
        }
        $used = array_unique($used);
        $this->assertGreaterThan(20, count($used));
        $this->assertSame([], array_values(array_diff($used, $keys)), 'strings used but not defined');
        $this->assertSame([], array_values(array_diff($keys, $used)), 'strings defined but never used');
    }

    public function test_privacy_declares_the_external_location_and_every_field_sent(): void {
        $this->assertTrue(is_subclass_of(provider::class, \core_privacy\local\metadata\provider::class));
        // Core counts a component compliant with a metadata provider and a request data provider.
        $this->assertTrue(is_subclass_of(provider::class, \core_privacy\local\request\data_provider::class));
        $this->assertTrue(is_subclass_of(provider::class, \core_privacy\local\request\core_userlist_provider::class));
        $this->assertFalse(is_subclass_of(provider::class, \core_privacy\local\metadata\null_provider::class),
            'a plugin that sends personal data elsewhere may not be a null provider');

        $collection = provider::get_metadata(new \core_privacy\local\metadata\collection('local_zohosync'));
        [$table, $item] = $collection->items;

        // The queue table, with every field it holds but its id.
        $this->assertSame('database_table', $table['type']);
        $this->assertSame('local_zohosync_queue', $table['name']);
        $this->assertSame('privacy:metadata:local_zohosync_queue', $table['summary']);
        $xml = simplexml_load_file(self::PLUGIN . '/db/install.xml');
        $this->assertNotFalse($xml);
        $tables = [];
        foreach ($xml->TABLES->TABLE as $declared) {
            $tables[] = (string) $declared['NAME'];
        }
        $this->assertSame(['local_zohosync_queue'], $tables, 'every table of the plugin is declared');
        $fields = [];
        foreach ($xml->TABLES->TABLE->FIELDS->FIELD as $field) {
            $fields[] = (string) $field['NAME'];
        }
        $this->assertSame(['id', 'payload', 'timecreated'], $fields);
        $this->assertSame(['payload', 'timecreated'], array_keys($table['fields']));
        foreach ($table['fields'] as $field => $stringid) {
            $this->assertSame("privacy:metadata:local_zohosync_queue:{$field}", $stringid);
        }

        $this->assertSame('external_location', $item['type']);
        $this->assertSame('zohosync_receiver', $item['name']);
        $this->assertSame('privacy:metadata:zohosync_receiver', $item['summary']);

        // The fields declared are the fields of a delivery that describe a person or what happened to them.
        $graded = json_decode(json_encode(\local_zohosync\observer::payload(self::user_graded_data())), true);
        $this->assertSame([], array_values(array_diff(array_keys($item['fields']), array_keys($graded))));
        foreach (['userid', 'relateduserid', 'courseid', 'other', 'timecreated', 'grade_item'] as $field) {
            $this->assertArrayHasKey($field, $item['fields']);
        }
        foreach ($item['fields'] as $field => $stringid) {
            $this->assertSame("privacy:metadata:zohosync_receiver:{$field}", $stringid);
            $this->assertNotSame('', get_string($stringid, 'local_zohosync'));
        }

        $this->assertSame([], provider::get_contexts_for_userid(57)->get_contextids(), 'only transient deliveries are stored');
    }

    public function test_php_files_use_no_syntax_newer_than_php_7_4(): void {
        // Moodle 4.1 runs on PHP 7.4: no constructor promotion, match, nullsafe operator, readonly,
        // enums, named arguments, union types or str_contains.
        $root = realpath(self::PLUGIN);
        $files = new RecursiveIteratorIterator(new RecursiveDirectoryIterator($root, FilesystemIterator::SKIP_DOTS));
        $checked = 0;
        foreach ($files as $file) {
            $path = $file->getPathname();
            if (substr($path, -4) !== '.php' || strpos(substr($path, strlen($root)), '/tests/') === 0) {
                continue;
            }
            $checked++;
            foreach (token_get_all(file_get_contents($path)) as $token) {
                if (is_array($token)) {
                    $this->assertNotContains(token_name($token[0]), ['T_MATCH', 'T_NULLSAFE_OBJECT_OPERATOR', 'T_READONLY', 'T_ENUM'],
                        "{$path}: PHP 8 syntax");
                    if ($token[0] === T_STRING) {
                        $this->assertNotContains($token[1], ['str_contains', 'str_starts_with', 'str_ends_with'],
                            "{$path}: PHP 8 function");
                    }
                }
            }
            $this->assertDoesNotMatchRegularExpression('/function __construct\([^)]*\b(public|private|protected)\s/', file_get_contents($path),
                "{$path}: constructor promotion is PHP 8");
        }
        $this->assertSame(15, $checked);
    }
}
