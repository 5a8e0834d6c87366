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

namespace local_zohosync;

/**
 * The plugin's settings, read once and checked.
 *
 * Settings (all under the component local_zohosync; each can also be forced in config.php with
 * $CFG->forced_plugin_settings['local_zohosync'][<name>]):
 *
 * - receiverurl: the sync service's base URL; deliveries go to <receiverurl>/v1/webhooks/moodle/<tenant>.
 * - tenant: the school's tenant id in the sync service's tenants file.
 * - secret: the tenant's webhook secret (the value of its moodle.webhook_secret_env on the sync service).
 * - events: the forwarded events, comma-separated keys of {@see self::EVENTS}.
 * - timeout: seconds one delivery may take before it counts as failed (and is retried).
 *
 * @package    local_zohosync
 * @copyright  2026 sync_pipelines contributors
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
final class config {

    /** @var string The plugin's component name. */
    public const COMPONENT = 'local_zohosync';

    /** @var array<string, string> Setting key => the Moodle event it stands for. */
    public const EVENTS = [
        'user_created' => '\core\event\user_created',
        'user_updated' => '\core\event\user_updated',
        'user_enrolment_created' => '\core\event\user_enrolment_created',
        'user_enrolment_deleted' => '\core\event\user_enrolment_deleted',
        'user_enrolment_updated' => '\core\event\user_enrolment_updated',
        'user_graded' => '\core\event\user_graded',
        'course_updated' => '\core\event\course_updated',
    ];

    /**
     * @var array<int, string[]> Plugin version => the event keys it added. Moodle applies a setting's
     * default only while the setting has never been saved, and every site has saved `events` (the
     * install writes the defaults): the upgrade to that version ticks these, {@see self::tick_new_events()}.
     */
    public const EVENTS_ADDED = [
        2026120701 => ['user_enrolment_updated', 'course_updated'],
    ];

    /** @var string The receiver's route for Moodle events, followed by the tenant id. */
    public const ROUTE = '/v1/webhooks/moodle/';

    /** @var int Default delivery timeout, seconds. */
    public const DEFAULT_TIMEOUT = 10;

    /** @var int Shortest allowed timeout, seconds. */
    public const MIN_TIMEOUT = 1;

    /** @var int Longest allowed timeout, seconds: a delivery holds a cron runner while it waits. */
    public const MAX_TIMEOUT = 60;

    /** @var int Longest wait for the TCP/TLS connection, seconds (never more than the timeout). */
    public const CONNECT_TIMEOUT = 5;

    /** @var string The receiver's tenant id pattern (sync_pipelines.tenants.TENANT_ID). */
    public const TENANT_PATTERN = '/^[A-Za-z0-9_-]{1,64}$/';

    /** @var string Base URL of the sync service, without a trailing slash. */
    public $receiverurl;

    /** @var string Tenant id. */
    public $tenant;

    /** @var string Signing secret. Never log it. */
    public $secret;

    /** @var string[] Enabled event keys (of {@see self::EVENTS}). */
    public $events;

    /** @var int Delivery timeout, seconds. */
    public $timeout;

    /**
     * Use {@see self::load()}.
     *
     * @param string $receiverurl
     * @param string $tenant
     * @param string $secret
     * @param string[] $events
     * @param int $timeout
     */
    private function __construct(string $receiverurl, string $tenant, string $secret, array $events, int $timeout) {
        $this->receiverurl = $receiverurl;
        $this->tenant = $tenant;
        $this->secret = $secret;
        $this->events = $events;
        $this->timeout = $timeout;
    }

    /**
     * The current settings.
     *
     * @return self
     */
    public static function load(): self {
        $raw = get_config(self::COMPONENT);
        $raw = is_object($raw) ? $raw : new \stdClass();
        $timeout = isset($raw->timeout) && is_numeric($raw->timeout) ? (int) $raw->timeout : self::DEFAULT_TIMEOUT;
        return new self(
            rtrim(trim((string) ($raw->receiverurl ?? '')), '/'),
            trim((string) ($raw->tenant ?? '')),
            (string) ($raw->secret ?? ''),
            self::parse_events($raw->events ?? null),
            max(self::MIN_TIMEOUT, min(self::MAX_TIMEOUT, $timeout))
        );
    }

    /**
     * The enabled event keys from the multi-checkbox value.
     *
     * @param mixed $value "user_created,user_graded", "" (none), or null when the setting was never saved (all).
     * @return string[]
     */
    private static function parse_events($value): array {
        if ($value === null || $value === false) {
            return array_keys(self::EVENTS);
        }
        $keys = array_map('trim', explode(',', (string) $value));
        return array_values(array_intersect(array_keys(self::EVENTS), $keys));
    }

    /**
     * Tick events a new version forwards in the saved `events` setting (an upgrade step), keeping
     * every other choice: an event the administrator unticked stays unticked. A setting never saved
     * already means every event; one with nothing ticked (the administrator wants nothing sent) is
     * left as it is.
     *
     * @param string[] $keys keys of {@see self::EVENTS}.
     * @return void
     */
    public static function tick_new_events(array $keys): void {
        $value = get_config(self::COMPONENT, 'events');
        if ($value === false || $value === null || trim((string) $value) === '') {
            return;
        }
        $ticked = array_merge(array_map('trim', explode(',', (string) $value)), $keys);
        $events = array_values(array_intersect(array_keys(self::EVENTS), $ticked));
        set_config('events', implode(',', $events), self::COMPONENT);
    }

    /**
     * The setting key of a Moodle event name, or null if the plugin does not forward it.
     *
     * @param string $eventname e.g. '\core\event\user_graded' (the leading backslash is optional).
     * @return string|null e.g. 'user_graded'.
     */
    public static function event_key(string $eventname): ?string {
        $key = array_search('\\' . ltrim($eventname, '\\'), self::EVENTS, true);
        return $key === false ? null : $key;
    }

    /**
     * Whether an event is forwarded.
     *
     * @param string $key a key of {@see self::EVENTS}.
     * @return bool
     */
    public function is_enabled(string $key): bool {
        return in_array($key, $this->events, true);
    }

    /**
     * What stops a delivery, in words an administrator can act on (never the secret itself).
     *
     * @return string[] empty when the plugin can deliver.
     */
    public function problems(): array {
        $problems = [];
        $urlproblem = self::url_problem($this->receiverurl);
        if ($urlproblem !== null) {
            $problems[] = $urlproblem;
        }
        if ($this->tenant === '') {
            $problems[] = 'the tenant id is not set';
        } else if (!preg_match(self::TENANT_PATTERN, $this->tenant)) {
            $problems[] = "the tenant id is not 1-64 letters, digits, '_' or '-'";
        }
        if ($this->secret === '') {
            $problems[] = 'the signing secret is not set';
        }
        return $problems;
    }

    /**
     * What is wrong with a receiver URL, or null if it will do.
     *
     * @param string $url the setting's value.
     * @return string|null
     */
    public static function url_problem(string $url): ?string {
        $url = trim($url);
        if ($url === '') {
            return 'the receiver URL is not set';
        }
        if (!preg_match('#^https?://[^/?\#\s@]+(/[^?\#\s]*)?$#i', $url)) {
            return 'the receiver URL must be an http(s) URL without credentials, query or fragment';
        }
        if (stripos($url, '/v1/webhooks/') !== false) {
            return 'the receiver URL must be the base URL only (the plugin adds ' . self::ROUTE . '<tenant id>)';
        }
        return null;
    }

    /**
     * Whether the plugin can deliver at all.
     *
     * @return bool
     */
    public function is_complete(): bool {
        return $this->problems() === [];
    }

    /**
     * The URL deliveries are posted to.
     *
     * @return string e.g. https://sync.example.org/v1/webhooks/moodle/demo_school
     */
    public function endpoint(): string {
        return $this->receiverurl . self::ROUTE . rawurlencode($this->tenant);
    }
}
