//! Panics on the threads the services run on, and numbers from the
//! environment.

use super::*;

/// A number from the environment, decimal or `0x` hexadecimal.
pub fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let value = value.trim().replace(['_', ','], "");
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name} must be a number, not {value:?}")))
}

/// Panics on the sweep's runtime threads, where the services run, as the
/// panic hook saw them.
pub static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Notes every panic on the sweep's threads; other threads' panics, other
/// tests' among them, go on to the hook as before.
pub fn watch_for_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let ours = std::thread::current()
                .name()
                .is_some_and(|name| name.starts_with(WORKER_THREAD));
            if ours {
                PANICS
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(info.to_string());
            }
            previous(info);
        }));
    });
}

pub fn panic_count() -> usize {
    PANICS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .len()
}

pub fn panics_since(count: usize) -> Vec<String> {
    PANICS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(count..)
        .map(<[String]>::to_vec)
        .unwrap_or_default()
}
