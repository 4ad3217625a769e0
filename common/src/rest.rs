//! The controller's `GET /v1/services` long poll as node agents read it:
//! the headers both sides name.

/// The plan version an answer shows.
pub const PLAN_VERSION_HEADER: &str = "x-talaria-plan-version";

/// The controller process that version belongs to: versions start over
/// when it restarts, so another epoch's version means nothing.
pub const PLAN_EPOCH_HEADER: &str = "x-talaria-plan-epoch";

/// What a long poll's answer holds: [`ANSWER_FULL`] (every Service, an
/// array) or [`ANSWER_DELTA`] (what changed after `after`, an object).
pub const ANSWER_HEADER: &str = "x-talaria-answer";

/// [`ANSWER_HEADER`] of an answer with every Service.
pub const ANSWER_FULL: &str = "full";

/// [`ANSWER_HEADER`] of an answer with what changed.
pub const ANSWER_DELTA: &str = "delta";
