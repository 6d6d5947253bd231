//! Flat combining of write calls: redb has one writer at a time, so calls that arrive while a
//! write transaction runs wait anyway. Instead of running one after the other, each with its own
//! commit and fsync, the next call to find the writer free takes every waiting call and runs
//! them in one transaction; each caller gets its own result. A failed transaction fails every
//! call in it, and none of them stored anything.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use mpi_core::store::{StoreError, StoreResult};

/// Calls taken into one transaction at most.
const GROUP_MAX: usize = 16;

struct State<Request, Answer> {
    queue: Vec<(u64, Request)>,
    next_ticket: u64,
    running: bool,
    finished: HashMap<u64, Result<Answer, String>>,
}

/// Combines calls of type `Request` answered with `Answer`.
pub(crate) struct Combiner<Request, Answer> {
    state: Mutex<State<Request, Answer>>,
    done: Condvar,
}

impl<Request, Answer> Default for Combiner<Request, Answer> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                queue: Vec::new(),
                next_ticket: 0,
                running: false,
                finished: HashMap::new(),
            }),
            done: Condvar::new(),
        }
    }
}

impl<Request, Answer> Combiner<Request, Answer> {
    fn lock(&self) -> MutexGuard<'_, State<Request, Answer>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `request`, possibly together with other waiting calls: `run_group` gets the group
    /// and returns one answer per call, in order, or fails them all.
    pub(crate) fn run(
        &self,
        request: Request,
        run_group: impl Fn(&[Request]) -> StoreResult<Vec<Answer>>,
    ) -> StoreResult<Answer> {
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push((ticket, request));
        loop {
            if let Some(answer) = state.finished.remove(&ticket) {
                return answer.map_err(StoreError::Engine);
            }
            if state.running {
                state = self
                    .done
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.running = true;
            let take = state.queue.len().min(GROUP_MAX);
            let rest = state.queue.split_off(take);
            let group = std::mem::replace(&mut state.queue, rest);
            drop(state);
            let (tickets, requests): (Vec<u64>, Vec<Request>) = group.into_iter().unzip();
            let answers = run_group(&requests);
            state = self.lock();
            match answers {
                Ok(answers) if answers.len() == tickets.len() => {
                    state
                        .finished
                        .extend(tickets.into_iter().zip(answers.into_iter().map(Ok)));
                }
                Ok(_) => {
                    let cause = "a combined write answered the wrong number of calls".to_owned();
                    state
                        .finished
                        .extend(tickets.into_iter().map(|t| (t, Err(cause.clone()))));
                }
                Err(error) => {
                    let cause = error.to_string();
                    state
                        .finished
                        .extend(tickets.into_iter().map(|t| (t, Err(cause.clone()))));
                }
            }
            state.running = false;
            self.done.notify_all();
        }
    }
}
