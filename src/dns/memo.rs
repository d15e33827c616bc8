//! The questions of one evaluation: each (type, name) goes to the DNS once, and every other
//! lookup of the same evaluation that asks it, while it is in flight or after, shares its
//! answer.
//!
//! The answer cache cannot do this: the lookups of a scoring evaluation start together, so
//! the second asker of a name comes while the first is still waiting, and answers with a
//! TTL of 0 are never cached at all.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::answer::Answer;

/// One question: its answer once there is one, and the lookups waiting for it.
struct Slot<T> {
    answer: RefCell<Option<Answer<T>>>,
    /// Whether a lookup is asking the DNS now.
    asking: Cell<bool>,
    waiting: RefCell<Vec<Waker>>,
}

/// What a lookup does next: take the answer, or ask the DNS itself.
enum Turn<T> {
    Answered(Answer<T>),
    Ask,
}

impl<T: Clone> Slot<T> {
    fn new() -> Self {
        Slot {
            answer: RefCell::new(None),
            asking: Cell::new(false),
            waiting: RefCell::new(Vec::new()),
        }
    }

    /// The answer when there is one; the turn to ask when nobody is asking (the first
    /// lookup, or the next one after an asker gave up); otherwise a wait.
    fn poll_turn(&self, cx: &mut Context<'_>) -> Poll<Turn<T>> {
        if let Some(answer) = &*self.answer.borrow() {
            return Poll::Ready(Turn::Answered(answer.clone()));
        }
        if !self.asking.get() {
            return Poll::Ready(Turn::Ask);
        }
        let mut waiting = self.waiting.borrow_mut();
        // The lookups of one evaluation usually share a task: one waker each is enough.
        if !waiting.iter().any(|w| w.will_wake(cx.waker())) {
            waiting.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// The lookup asking for a slot. Dropped before it has the answer (its caller gave up at a
/// deadline of its own), it hands the question to the next waiting lookup, so that no
/// lookup waits for an asker that is gone.
struct Asker<'a, T>(&'a Slot<T>);

impl<T> Asker<'_, T> {
    fn answered(self, answer: Answer<T>) {
        *self.0.answer.borrow_mut() = Some(answer);
    }
}

impl<T> Drop for Asker<'_, T> {
    fn drop(&mut self) {
        self.0.asking.set(false);
        for waker in self.0.waiting.take() {
            waker.wake();
        }
    }
}

/// The answers of one evaluation by (record type, name in lower case). Failures are kept
/// too: the evaluation's lookups share one deadline, so asking again would not do better.
pub(crate) struct Memo {
    slots: RefCell<HashMap<(u16, String), Rc<dyn Any>>>,
}

impl Memo {
    pub(crate) fn new() -> Memo {
        Memo {
            slots: RefCell::new(HashMap::new()),
        }
    }

    /// The answer to (`record_type`, `name`): the one this evaluation already has, the one
    /// of the lookup asking now when it comes, or else what `ask` gives.
    pub(crate) async fn answer<T, F>(
        &self,
        record_type: u16,
        name: &str,
        ask: impl FnOnce() -> F,
    ) -> Answer<T>
    where
        T: Clone + 'static,
        F: Future<Output = Answer<T>>,
    {
        let slot = self.slot::<T>(record_type, name);
        if let Turn::Answered(answer) = std::future::poll_fn(|cx| slot.poll_turn(cx)).await {
            return answer;
        }
        // No await since the turn came: no other lookup can have taken it meanwhile.
        slot.asking.set(true);
        let asker = Asker(&slot);
        let answer = ask().await;
        asker.answered(answer.clone());
        answer
    }

    fn slot<T: Clone + 'static>(&self, record_type: u16, name: &str) -> Rc<Slot<T>> {
        let key = (record_type, name.to_ascii_lowercase());
        let any = self
            .slots
            .borrow_mut()
            .entry(key)
            .or_insert_with(|| -> Rc<dyn Any> { Rc::new(Slot::<T>::new()) })
            .clone();
        // One record type has one record shape; should that ever not hold, the lookup
        // asks on its own rather than fail.
        any.downcast::<Slot<T>>()
            .unwrap_or_else(|_| Rc::new(Slot::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    type Boxed<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + 'a>>;

    fn boxed<'a, T>(future: impl Future<Output = T> + 'a) -> Boxed<'a, T> {
        Box::pin(future)
    }

    /// Runs the futures at once on the current task; their outputs in order.
    async fn join<T>(futures: Vec<Boxed<'_, T>>) -> Vec<T> {
        let mut futures: Vec<_> = futures.into_iter().map(Some).collect();
        let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
        std::future::poll_fn(|cx| {
            for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
                if let Some(f) = future
                    && let Poll::Ready(v) = f.as_mut().poll(cx)
                {
                    *output = Some(v);
                    *future = None;
                }
            }
            if futures.iter().all(Option::is_none) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        outputs.into_iter().flatten().collect()
    }

    /// An answer that takes a few polls to come, counting how often it was asked.
    async fn asked(count: &Cell<u32>, value: u8) -> Answer<u8> {
        count.set(count.get() + 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        Answer::Found(vec![value])
    }

    #[test]
    fn one_question_in_flight_is_asked_once() {
        let memo = Memo::new();
        let count = Cell::new(0);
        let answers = runtime().block_on(join(vec![
            boxed(memo.answer(1, "Host.Example", || asked(&count, 1))),
            boxed(memo.answer(1, "host.example", || asked(&count, 2))),
            boxed(memo.answer(28, "host.example", || asked(&count, 3))),
        ]));
        let (one, three) = (Answer::Found(vec![1]), Answer::Found(vec![3]));
        assert_eq!(answers, [one.clone(), one.clone(), three]);
        assert_eq!(count.get(), 2);
        // Asked again later in the evaluation: the same answer, no new query.
        let again = runtime().block_on(memo.answer(1, "HOST.example", || asked(&count, 4)));
        assert_eq!((again, count.get()), (one, 2));
    }

    #[test]
    fn a_waiting_lookup_asks_when_the_asker_gives_up() {
        let memo = Memo::new();
        let count = Cell::new(0);
        let gave_up = Answer::Failed("gave up".to_string());
        let answers = runtime().block_on(join(vec![
            boxed(async {
                let asking = memo.answer(1, "host.example", || asked(&count, 1));
                tokio::time::timeout(Duration::from_millis(5), asking)
                    .await
                    .unwrap_or(gave_up.clone())
            }),
            // Bounded, so that a lookup left waiting for the gone asker fails the test.
            boxed(async {
                let waiting = memo.answer(1, "host.example", || asked(&count, 2));
                tokio::time::timeout(Duration::from_millis(500), waiting)
                    .await
                    .unwrap_or(Answer::Failed("left waiting".to_string()))
            }),
        ]));
        assert_eq!(answers, [gave_up, Answer::Found(vec![2])]);
        assert_eq!(count.get(), 2);
    }
}
