//! Where a request's own time goes inside the gateway, stage by stage: a
//! diagnostic for issue 6, compiled in only with the `stage-probe` feature
//! (`scripts/bench-stages.sh` builds and drives it). Without the feature
//! every function here is empty and inlined away.
//!
//! Why in-process: the added time to first token that the benchmark
//! measures from outside moves by tens of µs from run to run on a shared
//! machine, more than most changes to the request path are worth. Timed
//! from inside, the gateway's own stages repeat from run to run within
//! about a tenth (a quarter at 100 streams/s), and they show what the
//! outside figure cannot: how much slower the same code runs when the
//! previous request was long ago (caches cold) than back to back.
//!
//! A request's marks are kept per thread, so the figures are only
//! meaningful with the gateway on one CPU (one worker, as the benchmarks
//! pin it) and requests that do not overlap on their way in (they rarely
//! do below some hundreds per second). Only requests to a backend with
//! Lexora's own engine client (`upstream/pool.rs`, the engines' HTTP/1.1
//! backends) are timed: the others never mark [`Stage::Answered`], which
//! ends a request at its first write. Every [`BATCH`] requests one line
//! goes to stderr: `stage-probe {"p50_ns":[...],"p90_ns":[...]}`, a value
//! per [`Stage`] after the first (the time since the stage before it).

/// The points a request passes, in order. The time of each is taken when
/// the request reaches it; a stage's figure is the time since the stage
/// before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The HTTP/1.1 server has parsed the request's head.
    Head,
    /// The head is an `http::Request` with its body.
    Request,
    /// The gateway's handler has begun (`Gateway::proxy_stamped`).
    Dispatched,
    /// The API key is checked and the body read.
    Read,
    /// The body is parsed (and rewritten, if it must be).
    Parsed,
    /// The model's backends are chosen.
    Routed,
    /// The rate limits are applied.
    Admitted,
    /// Queue and breaker passed: a pooled backend is asked to send.
    Sending,
    /// A connection to the engine is at hand.
    Connected,
    /// The request is written to the engine.
    Sent,
    /// The answer's head is read: the engine's own time, and the wake-ups
    /// on both sides, not the gateway's.
    Answered,
    /// The answer (or a stream's first piece) is ready for the client.
    Returned,
    /// Its first bytes are written to the client.
    Written,
}

/// How many stages there are.
pub const STAGES: usize = Stage::Written as usize + 1;

/// Requests per line of figures.
pub const BATCH: usize = 100;

#[cfg(feature = "stage-probe")]
mod on {
    use std::cell::RefCell;
    use std::time::Instant;

    use super::{Stage, BATCH, STAGES};

    #[derive(Default)]
    struct Marks {
        /// The current request's marks.
        at: [Option<Instant>; STAGES],
        /// Finished requests: the time of each stage since the one before
        /// it, in ns; `u64::MAX` where a stage was not reached.
        done: Vec<[u64; STAGES]>,
    }

    thread_local! {
        static MARKS: RefCell<Marks> = RefCell::default();
    }

    pub fn mark(stage: Stage) {
        let now = Instant::now();
        MARKS.with(|marks| {
            let mut marks = marks.borrow_mut();
            if stage == Stage::Head {
                marks.at = [None; STAGES];
            }
            marks.at[stage as usize] = Some(now);
        });
    }

    pub fn written() {
        let now = Instant::now();
        MARKS.with(|marks| {
            let mut marks = marks.borrow_mut();
            // Only the first write after an answer's head was read ends a
            // request; later writes (a stream's chunks) and answers the
            // gateway made itself are not timed.
            if marks.at[Stage::Answered as usize].is_none() {
                return;
            }
            marks.at[Stage::Written as usize] = Some(now);
            let mut row = [u64::MAX; STAGES];
            let mut before = None;
            for (stage, at) in marks.at.iter().enumerate() {
                let Some(at) = *at else { continue };
                if let Some(before) = before {
                    row[stage] = at.saturating_duration_since(before).as_nanos() as u64;
                }
                before = Some(at);
            }
            marks.at = [None; STAGES];
            marks.done.push(row);
            if marks.done.len() >= BATCH {
                eprintln!("stage-probe {}", summary(&marks.done));
                marks.done.clear();
            }
        });
    }

    /// The requests of this thread timed since the last line of figures.
    #[cfg(test)]
    pub fn pending() -> Vec<[u64; STAGES]> {
        MARKS.with(|marks| marks.borrow().done.clone())
    }

    /// `{"p50_ns":[..],"p90_ns":[..]}`, one value per stage after the first
    /// (`null` where no request reached it).
    pub(super) fn summary(rows: &[[u64; STAGES]]) -> String {
        let mut p50 = Vec::new();
        let mut p90 = Vec::new();
        for stage in 1..STAGES {
            let mut times: Vec<u64> = rows
                .iter()
                .map(|row| row[stage])
                .filter(|t| *t != u64::MAX)
                .collect();
            times.sort_unstable();
            let at = |q: usize| {
                times
                    .get(times.len().saturating_sub(1) * q / 100)
                    .map_or("null".to_owned(), u64::to_string)
            };
            p50.push(at(50));
            p90.push(at(90));
        }
        format!(
            "{{\"p50_ns\":[{}],\"p90_ns\":[{}]}}",
            p50.join(","),
            p90.join(",")
        )
    }
}

/// Notes that the current request has reached `stage`.
#[inline(always)]
pub fn mark(stage: Stage) {
    #[cfg(feature = "stage-probe")]
    on::mark(stage);
    #[cfg(not(feature = "stage-probe"))]
    let _ = stage;
}

/// Notes a completed write to a client: the end of a timed request when it
/// is the first since the request's answer arrived.
#[inline(always)]
pub fn written() {
    #[cfg(feature = "stage-probe")]
    on::written();
}

#[cfg(all(test, feature = "stage-probe"))]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_timed_from_its_head_to_its_first_write_after_the_answer() {
        // A write before the answer (an error the gateway made itself)
        // times nothing.
        mark(Stage::Head);
        written();
        assert!(on::pending().is_empty());

        mark(Stage::Head);
        mark(Stage::Request);
        mark(Stage::Sent);
        std::thread::sleep(std::time::Duration::from_millis(2));
        mark(Stage::Answered);
        written();
        // A stream's later chunks end no request.
        written();
        let rows = on::pending();
        assert_eq!(rows.len(), 1);
        let row = rows[0];
        assert_eq!(
            row[Stage::Head as usize],
            u64::MAX,
            "the first stage has no time before it"
        );
        assert_ne!(row[Stage::Request as usize], u64::MAX);
        assert_eq!(row[Stage::Parsed as usize], u64::MAX, "not reached");
        // A stage follows the last one reached, however many were missed.
        assert_ne!(row[Stage::Sent as usize], u64::MAX);
        assert!(row[Stage::Answered as usize] >= 2_000_000, "{row:?}");
        assert!(row[Stage::Written as usize] < 2_000_000, "{row:?}");
    }

    #[test]
    fn a_line_gives_the_median_and_p90_of_each_stage() {
        let mut rows = Vec::new();
        for i in 0..10u64 {
            let mut row = [u64::MAX; STAGES];
            row[Stage::Request as usize] = 100 * (i + 1);
            row[Stage::Written as usize] = 7;
            rows.push(row);
        }
        let line = on::summary(&rows);
        assert!(line.starts_with("{\"p50_ns\":[500,null,"), "{line}");
        assert!(line.contains("\"p90_ns\":[900,null,"), "{line}");
        assert!(line.ends_with(",7]}"), "{line}");
    }
}
