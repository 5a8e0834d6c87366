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
 * Signs a delivery the way the sync service's receiver checks it (sync_pipelines/webhooks/signing.py).
 *
 * The signature is an HMAC-SHA256, keyed with the tenant's webhook secret, over the bytes
 * "<timestamp>." followed by the exact request body, sent as
 *
 *     X-Sync-Timestamp: 1769337005
 *     X-Sync-Signature: sha256=<64 lowercase hex digits>
 *
 * The receiver refuses a timestamp more than 300 seconds from its own clock, so a captured delivery
 * cannot be replayed later, and the Moodle server's clock must be right. A retried delivery is signed
 * again, with the time of the new attempt, over the same body.
 *
 * @package    local_zohosync
 * @copyright  2026 sync_pipelines contributors
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
final class signer {

    /** @var string Header carrying the Unix time of signing. */
    public const TIMESTAMP_HEADER = 'X-Sync-Timestamp';

    /** @var string Header carrying the signature. */
    public const SIGNATURE_HEADER = 'X-Sync-Signature';

    /** @var string The signature's scheme prefix. */
    public const SCHEME = 'sha256';

    /**
     * The X-Sync-Signature value of a body sent at a time.
     *
     * @param string $secret the tenant's webhook secret (UTF-8).
     * @param string $body the request body, byte for byte as sent.
     * @param int $timestamp Unix seconds, the X-Sync-Timestamp value.
     * @return string "sha256=<lowercase hex>".
     */
    public static function signature(string $secret, string $body, int $timestamp): string {
        return self::SCHEME . '=' . hash_hmac('sha256', $timestamp . '.' . $body, $secret);
    }

    /**
     * Every header of a delivery: the content type and the two that authenticate it.
     *
     * @param string $secret the tenant's webhook secret.
     * @param string $body the JSON body, byte for byte as sent.
     * @param int $timestamp Unix seconds.
     * @return array<string, string> header name => value.
     */
    public static function headers(string $secret, string $body, int $timestamp): array {
        return [
            'Content-Type' => 'application/json',
            self::TIMESTAMP_HEADER => (string) $timestamp,
            self::SIGNATURE_HEADER => self::signature($secret, $body, $timestamp),
        ];
    }
}
