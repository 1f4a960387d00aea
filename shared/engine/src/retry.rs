//! Time budgets and retries for calls AWS documents as "try again later" (throttling).
//!
//! A [`Deadline`] is how long an answer may take (a Lambda's remaining time less a margin,
//! so the caller gets a clear "retry later" instead of a timeout). [`retry_throttled`]
//! retries a throttled call with exponential backoff and jitter until it succeeds, fails
//! another way, or the deadline would pass.

use std::future::Future;
use std::time::Duration;
pub use timeline_core::time::Deadline;

/// The longest pause between two tries.
const MAX_PAUSE: Duration = Duration::from_secs(2);
/// How long a retry loop without a deadline keeps trying.
const NO_DEADLINE_BUDGET: Duration = Duration::from_secs(30);

/// Runs `call` until it succeeds or fails in a way `retryable` does not accept, pausing
/// between tries (exponential from 50 ms to 2 s, with jitter), for as long as `deadline`
/// allows (30 s of pauses without one).
pub async fn retry_throttled<T, E, F, Fut>(
    deadline: &Deadline,
    call: F,
    retryable: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    use backon::Retryable;
    let budget = deadline.remaining().unwrap_or(NO_DEADLINE_BUDGET);
    let backoff = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(MAX_PAUSE)
        .with_jitter()
        .without_max_times()
        .with_total_delay(Some(budget));
    call.retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e| retryable(e) && !deadline.passed())
        // Never sleep past the deadline: stop instead, with the last failure.
        .adjust(|_, pause| {
            let pause = pause?;
            match deadline.remaining() {
                None => Some(pause),
                Some(left) if left > pause => Some(pause),
                Some(_) => None,
            }
        })
        .await
}

/// As [`retry_throttled`], and also retries up to `attempts` times a failure that
/// `transient` accepts (a 500, a lost connection: worth another try, unlike a refusal).
pub async fn retry_transient<T, E, F, Fut>(
    deadline: &Deadline,
    attempts: usize,
    call: F,
    throttled: impl Fn(&E) -> bool,
    transient: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let failures = std::cell::Cell::new(0usize);
    retry_throttled(deadline, call, |e| {
        if throttled(e) {
            return true;
        }
        failures.set(failures.get() + 1);
        transient(e) && failures.get() < attempts
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_throttled_call_is_tried_again_until_it_succeeds() {
        let calls = AtomicUsize::new(0);
        let result: Result<usize, &str> = retry_throttled(
            &Deadline::after(Duration::from_secs(10)),
            || async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n < 3 {
                    Err("throttled")
                } else {
                    Ok(n)
                }
            },
            |e| *e == "throttled",
        )
        .await;
        assert_eq!(result, Ok(3));
    }

    #[tokio::test]
    async fn transient_failures_are_retried_a_bounded_number_of_times() {
        let calls = AtomicUsize::new(0);
        let result: Result<(), &str> = retry_transient(
            &Deadline::none(),
            3,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("500")
            },
            |e| *e == "throttled",
            |e| *e == "500",
        )
        .await;
        assert_eq!(result, Err("500"));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn other_failures_are_not_retried() {
        let calls = AtomicUsize::new(0);
        let result: Result<(), &str> = retry_throttled(
            &Deadline::none(),
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("gone")
            },
            |e| *e == "throttled",
        )
        .await;
        assert_eq!(result, Err("gone"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_deadline_ends_the_retries_with_the_last_failure() {
        let started = std::time::Instant::now();
        let result: Result<(), &str> = retry_throttled(
            &Deadline::after(Duration::from_millis(300)),
            || async { Err("throttled") },
            |e| *e == "throttled",
        )
        .await;
        assert_eq!(result, Err("throttled"));
        // Never a pause past the deadline (a little scheduling slack aside).
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_lambda_deadline_keeps_a_margin_and_a_cap() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let d = Deadline::lambda(
            now + 10_000,
            Duration::from_secs(2),
            Duration::from_secs(60),
        );
        let left = d.remaining().unwrap();
        assert!(
            left <= Duration::from_secs(8) && left > Duration::from_secs(7),
            "{left:?}"
        );
        let capped = Deadline::lambda(
            now + 900_000,
            Duration::from_secs(2),
            Duration::from_secs(25),
        );
        assert!(capped.remaining().unwrap() <= Duration::from_secs(25));
        // Already past: no time at all, never a panic.
        assert!(Deadline::lambda(now - 5_000, Duration::from_secs(2), Duration::MAX).passed());
    }

    #[test]
    fn a_deadline_says_how_much_time_is_left() {
        assert_eq!(Deadline::none().remaining(), None);
        assert!(!Deadline::none().passed());
        assert!(Deadline::after(Duration::ZERO).passed());
        let soon = Deadline::after(Duration::from_secs(60));
        assert!(soon.allows(Duration::from_secs(30)));
        assert!(!soon.allows(Duration::from_secs(120)));
    }
}
