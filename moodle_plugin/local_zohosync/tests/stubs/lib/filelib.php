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
 * Stand-in for lib/filelib.php: only the \curl class, which records requests instead of making them.
 *
 * It lives where Moodle's does ($CFG->libdir . '/filelib.php'), so a test fails if the plugin
 * forgets to require it. It answers like Moodle's curl: post() returns the response body (or the
 * error text when the transfer failed), get_info()['http_code'] is 0 without an answer, get_errno()
 * is cURL's error number, and $error is set when the transfer failed or the URL was blocked.
 *
 * @package    local_zohosync
 * @copyright  2026 sync_pipelines contributors
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

defined('MOODLE_INTERNAL') || die();

/**
 * Records each request in zohosync_stub::$requests and answers with the next of zohosync_stub::$responses.
 */
class curl {
    /** @var string cURL's error text of the last request. */
    public $error = '';
    /** @var array curl_getinfo() of the last request. */
    public $info = [];
    /** @var int */
    protected $errno = 0;
    /** @var string[] "Name: value" */
    protected $header = [];
    /** @var array */
    public $settings;

    /**
     * @param array $settings
     */
    public function __construct($settings = []) {
        $this->settings = $settings;
    }

    /**
     * @param string|string[] $header
     */
    public function setHeader($header) {
        if (is_array($header)) {
            foreach ($header as $value) {
                $this->setHeader($value);
            }
        } else {
            $this->header[] = $header;
        }
    }

    /**
     * @param string $url
     * @param array|string $params the raw body when a string.
     * @param array $options CURLOPT_* => value.
     * @return string|bool
     */
    public function post($url, $params = '', $options = []) {
        zohosync_stub::$requests[] = [
            'method' => 'POST',
            'url' => $url,
            'headers' => $this->header,
            'body' => $params,
            'options' => $options,
        ];
        $response = array_shift(zohosync_stub::$responses) ?? ['status' => 202, 'body' => '{"status":"accepted"}'];
        $this->errno = (int) ($response['errno'] ?? 0);
        $this->error = (string) ($response['error'] ?? '');
        $this->info = ($response['status'] ?? 0) || $this->errno ? ['http_code' => (int) ($response['status'] ?? 0)] : [];
        return $this->error === '' ? (string) ($response['body'] ?? '') : $this->error;
    }

    /**
     * @return array
     */
    public function get_info() {
        return $this->info;
    }

    /**
     * @return int
     */
    public function get_errno() {
        return $this->errno;
    }
}
