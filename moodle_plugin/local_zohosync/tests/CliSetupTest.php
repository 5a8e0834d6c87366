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
 * cli/setup_pipeline.php, read as text (it needs a Moodle site to run): its functions and
 * capabilities, the README's tables of them, and the pipeline client's calls all agree.
 *
 * @package    local_zohosync
 * @copyright  2026 sync_pipelines contributors
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

/**
 * @coversNothing
 */
final class CliSetupTest extends ZohosyncTestCase {

    /** @var string The script. */
    private const SCRIPT = __DIR__ . '/../cli/setup_pipeline.php';

    /** @var string The plugin's README. */
    private const README = __DIR__ . '/../README.md';

    /** @var string The pipeline's Moodle client. */
    private const CLIENT = self::REPO_ROOT . '/sync_pipelines/moodle/client.py';

    /** @var string The pipeline's list of the functions it calls (REQUIRED_FUNCTIONS). */
    private const PREFLIGHT = self::REPO_ROOT . '/sync_pipelines/moodle/preflight.py';

    /**
     * The functions the pipeline's token is for: REQUIRED_FUNCTIONS of the pipeline's preflight.
     *
     * @return string[]
     */
    private static function functions(): array {
        $source = file_get_contents(self::PREFLIGHT);
        if (!preg_match('/^REQUIRED_FUNCTIONS[^=]*= \((.*?)^\)/ms', $source, $match)) {
            throw new RuntimeException('REQUIRED_FUNCTIONS not found in sync_pipelines/moodle/preflight.py');
        }
        preg_match_all('/"([a-z_]+)"/', $match[1], $names);
        return $names[1];
    }

    /**
     * A constant array of the script, evaluated from its text between its start and end markers.
     *
     * @param string $name
     * @return array
     */
    private static function constant_array(string $name): array {
        $source = file_get_contents(self::SCRIPT);
        $pattern = '#// ' . $name . ' start\.\s*const ' . $name . ' = (\[.*?\]);\s*// ' . $name . ' end\.#s';
        if (!preg_match($pattern, $source, $match)) {
            throw new RuntimeException("{$name} not found between its markers in cli/setup_pipeline.php");
        }
        return eval('return ' . $match[1] . ';');
    }

    /**
     * The first column of the README table under a heading line, e.g. "| `capability` | why |".
     *
     * @param string $firstheader the table's first header cell.
     * @return string[]
     */
    private static function readme_column(string $firstheader): array {
        $lines = file(self::README, FILE_IGNORE_NEW_LINES);
        $values = [];
        $in = false;
        foreach ($lines as $line) {
            if (!$in && preg_match('/^\| ' . preg_quote($firstheader, '/') . ' \|/', $line)) {
                $in = true;
                continue;
            }
            if ($in) {
                if (strpos($line, '|') !== 0) {
                    break;
                }
                if (preg_match('/^\|\s*-+/', $line)) {
                    continue;
                }
                preg_match_all('/`([^`]+)`/', explode('|', $line)[1], $cells);
                $values = array_merge($values, $cells[1]);
            }
        }
        return $values;
    }

    public function test_the_service_has_exactly_the_pipelines_functions(): void {
        $functions = self::constant_array('LOCAL_ZOHOSYNC_FUNCTIONS');
        $this->assertSame(self::functions(), array_keys($functions));
        foreach ($functions as $function => $why) {
            $this->assertNotSame('', trim($why), "{$function} says what it is for");
        }
    }

    public function test_every_function_the_client_calls_is_in_the_service(): void {
        $this->assertFileExists(self::CLIENT);
        preg_match_all('/self\.(?:call|_write)\(\s*"([a-z_]+)"/', file_get_contents(self::CLIENT), $matches);
        // mod_assign_save_grade grades a learner in the demo and the acceptance run; the pipeline never does.
        $called = array_values(array_diff(array_unique($matches[1]), ['mod_assign_save_grade']));
        $this->assertGreaterThan(10, count($called));
        $this->assertSame([], array_values(array_diff($called, self::functions())),
            'sync_pipelines/moodle/client.py calls a function the token is not given: add it to LOCAL_ZOHOSYNC_FUNCTIONS ' .
            'in cli/setup_pipeline.php, with the capabilities it needs, and to the README');
    }

    public function test_every_capability_says_which_function_needs_it(): void {
        $capabilities = self::constant_array('LOCAL_ZOHOSYNC_CAPABILITIES');
        $this->assertCount(28, $capabilities);
        foreach ($capabilities as $capability => $why) {
            $this->assertMatchesRegularExpression('#^[a-z]+/[a-z_]+:[a-z_]+$#', $capability);
            $this->assertDoesNotMatchRegularExpression('#^mod/[a-z0-9_]+:view$#', $capability,
                'mod/<module>:view comes from --activity-modules');
            $names = array_filter(array_merge(self::functions(), ['every function']), static function (string $f) use ($why): bool {
                return strpos($why, $f) !== false;
            });
            $this->assertNotEmpty($names, "{$capability}: the reason names the function that needs it");
        }
    }

    public function test_the_readme_tables_list_the_same_functions_and_capabilities(): void {
        $this->assertSame(self::functions(), self::readme_column('function'));
        $capabilities = array_keys(self::constant_array('LOCAL_ZOHOSYNC_CAPABILITIES'));
        $readme = self::readme_column('capability');
        $this->assertSame(array_merge($capabilities, ['mod/<module>:view']), $readme);
    }

    public function test_only_the_token_goes_to_stdout(): void {
        $source = file_get_contents(self::SCRIPT);
        $this->assertSame(1, preg_match_all('/cli_writeln\((?![^;]*STDERR)[^;]*;/', $source, $stdout));
        $this->assertSame('cli_writeln($token);', $stdout[0][0]);
        $this->assertStringNotContainsString('echo ', $source);
        $this->assertStringNotContainsString('print', preg_replace('/sprintf|printed|prints/', '', $source));
        $this->assertStringNotContainsString('mtrace(', $source);
    }

    public function test_it_is_a_moodle_cli_script(): void {
        $source = file_get_contents(self::SCRIPT);
        $define = strpos($source, "define('CLI_SCRIPT', true);");
        $config = strpos($source, "require(__DIR__ . '/../../../config.php');");
        $this->assertNotFalse($define);
        $this->assertNotFalse($config);
        $this->assertLessThan($config, $define);
        foreach (["'help' => false", "'username' => 'zohosync_ws'", "'activity-modules' => null", "'check' => false",
                "'rotate-token' => false", "['h' => 'help']", 'FEATURE_GRADE_HAS_GRADE', 'cli_get_params(',
                'cli_error('] as $expected) {
            $this->assertStringContainsString($expected, $source);
        }
    }
}
