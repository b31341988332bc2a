//! Per-user request and token limits (in progress).
