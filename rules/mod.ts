/**
 * The compliance rules: pure functions from an event and its entity's facts to risk flags.
 * Rules do no I/O, read no clock and never mutate their input.
 *
 * @module
 */
export * from "./event.ts";
export * from "./consent.ts";
export * from "./types.ts";
export * from "./privacy.ts";
export * from "./retention.ts";
export * from "./account_sharing.ts";
export * from "./content_quality.ts";
export * from "./flag_merge.ts";
export * from "./registry.ts";
