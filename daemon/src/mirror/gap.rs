//! A test hook for races: [`at`] marks a point in the code where another thread's step can
//! come between a decision and the action on it (a reload deciding while a replacement is
//! promoted, a save creating its file while another mirror saves). A test puts the other
//! step there with [`put`] and so runs the racy order deterministically. Outside tests, [`at`]
//! does nothing.

#[cfg(test)]
type Step = Box<dyn FnOnce()>;

#[cfg(test)]
thread_local! {
    static GAP: std::cell::RefCell<Option<(&'static str, Step)>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs the step a test put at the point `name`, once, on this thread.
pub(crate) fn at(name: &'static str) {
    #[cfg(test)]
    GAP.with(|g| {
        let step = g.borrow_mut().take_if(|(n, _)| *n == name);
        if let Some((_, step)) = step {
            step();
        }
    });
    #[cfg(not(test))]
    let _ = name;
}

/// Puts `step` at the point `name` for this thread's next pass there.
#[cfg(test)]
pub(crate) fn put(name: &'static str, step: Step) {
    GAP.with(|g| *g.borrow_mut() = Some((name, step)));
}

/// Whether the step put last has run.
#[cfg(test)]
pub(crate) fn reached() -> bool {
    GAP.with(|g| g.borrow().is_none())
}
