//! [`Faults`]: the shared fault controller of one simulated process.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;

use crate::{LedgerError, StorageError};

/// What an injected fault does to the call it hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The call fails without reaching the backend (nothing happened).
    Before,
    /// The backend applies the call, then the acknowledgement is lost.
    After,
    /// Like [`Before`](Self::Before), and the process dies.
    CrashBefore,
    /// Like [`After`](Self::After), and the process dies.
    CrashAfter,
}

impl FaultKind {
    /// Whether the process dies with this fault.
    #[must_use]
    pub fn crashes(self) -> bool {
        matches!(self, FaultKind::CrashBefore | FaultKind::CrashAfter)
    }

    /// Whether the backend applies the call before it fails.
    #[must_use]
    pub fn applies(self) -> bool {
        matches!(self, FaultKind::After | FaultKind::CrashAfter)
    }
}

/// How the wrappers sleep for [`Faults::set_delay`] (the library never sleeps by itself:
/// pass your runtime's sleep, e.g. `Arc::new(|d| Box::pin(tokio::time::sleep(d)))`).
pub type Sleep = Arc<dyn Fn(Duration) -> BoxFuture<'static, ()> + Send + Sync>;

/// An armed schedule of failures.
#[derive(Clone, Copy, Debug)]
struct Armed {
    /// Mutations still to pass before the next failure.
    skip: u32,
    /// Failures still to inject (`u32::MAX`: until disarmed).
    times: u32,
    /// After a failure, let this many mutations pass before the next one (`None`: the
    /// failures are consecutive).
    period: Option<u32>,
    kind: FaultKind,
}

#[derive(Default)]
struct State {
    armed: Option<Armed>,
    down: bool,
    crashed: bool,
    delay: Duration,
    sleep: Option<Sleep>,
    injected: u64,
}

/// The shared fault controller of one simulated process: every [`FaultyStore`] and
/// [`FaultyTxLog`] of the process consults it on every call.
///
/// * Mutations (`create_tenant`, `apply`, `apply_batch`, `sweep`, the log's writes, and
///   `balance`, which may apply due expiries) count down an armed schedule.
/// * Reads fail only while the process is crashed or the dependency is down.
///
/// [`FaultyStore`]: super::FaultyStore
/// [`FaultyTxLog`]: super::FaultyTxLog
#[derive(Default)]
pub struct Faults {
    state: Mutex<State>,
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state.lock();
        f.debug_struct("Faults")
            .field("armed", &s.armed)
            .field("down", &s.down)
            .field("crashed", &s.crashed)
            .field("delay", &s.delay)
            .field("injected", &s.injected)
            .finish_non_exhaustive()
    }
}

/// What one call should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Gate {
    Pass,
    FailBefore,
    FailAfter,
}

impl Faults {
    /// A controller with nothing armed.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Fails once: after `skip` mutations pass, the next one gets `kind` (replaces any
    /// armed schedule).
    pub fn arm(&self, skip: u32, kind: FaultKind) {
        self.arm_schedule(skip, 1, None, kind);
    }

    /// Fails for a while: after `skip` mutations pass, the next `times` mutations get
    /// `kind` (`u32::MAX`: until [`disarm`](Self::disarm)).
    pub fn arm_run(&self, skip: u32, times: u32, kind: FaultKind) {
        self.arm_schedule(skip, times, None, kind);
    }

    /// Fails periodically: every `every`-th mutation from now (counting from 1) gets
    /// `kind`, until [`disarm`](Self::disarm). `every` of zero is taken as one.
    pub fn arm_every(&self, every: u32, kind: FaultKind) {
        let gap = every.max(1) - 1;
        self.arm_schedule(gap, u32::MAX, Some(gap), kind);
    }

    fn arm_schedule(&self, skip: u32, times: u32, period: Option<u32>, kind: FaultKind) {
        self.state.lock().armed = (times > 0).then_some(Armed {
            skip,
            times,
            period,
            kind,
        });
    }

    /// Removes an armed schedule (whatever did not fire yet).
    pub fn disarm(&self) {
        self.state.lock().armed = None;
    }

    /// Takes the dependency down (every call, reads included, fails with a retryable error
    /// before reaching the backend) or brings it back. The process stays alive.
    pub fn set_down(&self, down: bool) {
        self.state.lock().down = down;
    }

    /// Whether the dependency is down.
    #[must_use]
    pub fn is_down(&self) -> bool {
        self.state.lock().down
    }

    /// Makes every call that reaches the backend wait `delay` first, sleeping with `sleep`
    /// (a slow dependency). `Duration::ZERO` turns it off.
    pub fn set_delay(&self, delay: Duration, sleep: Sleep) {
        let mut s = self.state.lock();
        s.delay = delay;
        s.sleep = Some(sleep);
    }

    /// Whether the process is dead.
    #[must_use]
    pub fn crashed(&self) -> bool {
        self.state.lock().crashed
    }

    /// Brings a dead process back, with nothing armed (the caller reopens everything from
    /// durable state).
    pub fn restart(&self) {
        let mut s = self.state.lock();
        s.crashed = false;
        s.armed = None;
    }

    /// Faults injected so far (outage refusals not counted).
    #[must_use]
    pub fn injected(&self) -> u64 {
        self.state.lock().injected
    }

    /// The gate of a read.
    pub(super) fn read(&self) -> Result<(), LedgerError> {
        Self::open(&self.state.lock())
    }

    /// Whether calls reach the backend at all (not crashed, not down).
    fn open(s: &State) -> Result<(), LedgerError> {
        if s.crashed {
            return Err(dead());
        }
        if s.down {
            return Err(outage());
        }
        Ok(())
    }

    /// The gate of a mutation: advances the armed schedule.
    pub(super) fn mutation(&self) -> Result<Gate, LedgerError> {
        let mut s = self.state.lock();
        Self::open(&s)?;
        let Some(mut armed) = s.armed else {
            return Ok(Gate::Pass);
        };
        if armed.skip > 0 {
            armed.skip -= 1;
            s.armed = Some(armed);
            return Ok(Gate::Pass);
        }
        if armed.times != u32::MAX {
            armed.times -= 1;
        }
        armed.skip = armed.period.unwrap_or(0);
        s.armed = (armed.times > 0).then_some(armed);
        s.injected += 1;
        if armed.kind.crashes() {
            s.crashed = true;
        }
        Ok(if armed.kind.applies() {
            Gate::FailAfter
        } else {
            Gate::FailBefore
        })
    }

    /// Waits out the configured delay, if any.
    pub(super) async fn stall(&self) {
        let pause = {
            let s = self.state.lock();
            match (&s.sleep, s.delay.is_zero()) {
                (Some(sleep), false) => Some(sleep(s.delay)),
                _ => None,
            }
        };
        if let Some(pause) = pause {
            pause.await;
        }
    }

    /// Runs a read through the gate.
    pub(super) async fn run_read<T>(
        &self,
        call: impl Future<Output = Result<T, LedgerError>>,
    ) -> Result<T, LedgerError> {
        self.read()?;
        self.stall().await;
        call.await
    }

    /// Runs a mutation through the gate.
    pub(super) async fn run<T>(
        &self,
        call: impl Future<Output = Result<T, LedgerError>>,
    ) -> Result<T, LedgerError> {
        let gate = self.mutation()?;
        self.stall().await;
        match gate {
            Gate::Pass => call.await,
            Gate::FailBefore => Err(injected()),
            Gate::FailAfter => {
                let _lost = call.await;
                Err(injected())
            }
        }
    }
}

const INJECTED: &str = "injected fault";
const DEAD: &str = "process crashed";
const OUTAGE: &str = "injected outage";

fn injected() -> LedgerError {
    LedgerError::Storage(StorageError::retryable(INJECTED))
}

fn dead() -> LedgerError {
    LedgerError::Storage(StorageError::retryable(DEAD))
}

fn outage() -> LedgerError {
    LedgerError::Storage(StorageError::retryable(OUTAGE))
}

/// Whether an error is one a [`Faults`] controller injected: a fault, a call into a crashed
/// process, or a call during an outage.
#[must_use]
pub fn is_injected(e: &LedgerError) -> bool {
    match e {
        LedgerError::Storage(s) => [INJECTED, DEAD, OUTAGE].contains(&s.message.as_str()),
        LedgerError::BatchRejected { source, .. } => is_injected(source),
        _ => false,
    }
}
