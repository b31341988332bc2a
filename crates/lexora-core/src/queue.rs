//! Per-backend concurrency limit and priority queue (in progress).
