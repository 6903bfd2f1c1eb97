//! Readiness conditions besides the watches: a part that can stop the service from doing its
//! job (a queue consumer that cannot receive) keeps one, and `/readyz` reports every one.

use parking_lot::Mutex;

pub struct Condition {
    name: String,
    /// `None` when met, else why not.
    failing: Mutex<Option<String>>,
}

impl Condition {
    /// A condition not met until its owner says so.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            failing: Mutex::new(Some("not started".into())),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn met(&self) {
        *self.failing.lock() = None;
    }

    pub fn failing(&self, why: impl Into<String>) {
        *self.failing.lock() = Some(why.into());
    }

    /// `Err(why)` while not met.
    pub fn state(&self) -> Result<(), String> {
        match &*self.failing.lock() {
            None => Ok(()),
            Some(why) => Err(why.clone()),
        }
    }
}
