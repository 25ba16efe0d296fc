//! Counts answers, keeps the failures with what it takes to replay
//! each, and says whether the invariants held.

use super::*;

/// A case that broke an invariant, with what it takes to turn it into a
/// regression test.
pub struct Failure {
    pub path: String,
    pub sender: Sender,
    pub seed: u64,
    pub what: String,
    pub request: String,
}

#[derive(Default)]
pub struct Tally {
    pub cases: usize,
    pub codes: BTreeMap<&'static str, usize>,
    pub failures: Vec<Failure>,
}

impl Tally {
    /// Counts the answer; its code, if it had one.
    pub fn record(&mut self, answer: &Answer) -> Option<Code> {
        self.cases += 1;
        let code = match answer {
            Answer::Ok(_) => Some(Code::Ok),
            Answer::Status(status) => Some(status.code()),
            Answer::Hung => None,
        };
        *self
            .codes
            .entry(code.map_or("NO ANSWER", code_name))
            .or_default() += 1;
        code
    }

    pub fn summary(&self) -> String {
        let mut codes: Vec<(&str, usize)> = self.codes.iter().map(|(c, n)| (*c, *n)).collect();
        codes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let codes: Vec<String> = codes
            .iter()
            .map(|(code, n)| format!("{code} {}", thousands(*n)))
            .collect();
        format!("{} cases: {}", thousands(self.cases), codes.join(", "))
    }

    /// Fails with every broken invariant: the cases' (the first few in
    /// full) and those found `afterwards`.
    pub fn assert_held(&self, afterwards: &[String]) {
        if self.failures.is_empty() && afterwards.is_empty() {
            return;
        }
        let mut report = format!(
            "{} of {} cases broke an invariant{}\n",
            thousands(self.failures.len()),
            thousands(self.cases),
            if self.failures.is_empty() { "" } else { ":" },
        );
        for failure in self.failures.iter().take(SHOWN_FAILURES) {
            report.push_str(&format!(
                "\n{} with {}, seed {:#018x}: {}\n    request: {}\n",
                failure.path,
                failure.sender.name(),
                failure.seed,
                failure.what,
                failure.request
            ));
        }
        if self.failures.len() > SHOWN_FAILURES {
            report.push_str(&format!(
                "\n... and {} more\n",
                self.failures.len() - SHOWN_FAILURES
            ));
        }
        for broken in afterwards {
            report.push_str(&format!("\n{broken}\n"));
        }
        panic!("{report}");
    }
}

/// The request as JSON, huge strings cut short (their seed makes them
/// again in full).
pub fn request_json(request: &DynamicMessage) -> String {
    fn shorten(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(text) if text.chars().count() > 200 => {
                let head: String = text.chars().take(40).collect();
                *text = format!("{head}… ({} chars)", text.chars().count());
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(shorten),
            serde_json::Value::Object(fields) => fields.values_mut().for_each(shorten),
            _ => {}
        }
    }
    let mut json = serde_json::to_value(request).expect("a request as JSON");
    shorten(&mut json);
    let text = json.to_string();
    // A long list of short items is cut too.
    if text.chars().count() > 2_000 {
        let head: String = text.chars().take(2_000).collect();
        format!("{head}… ({} chars)", text.chars().count())
    } else {
        text
    }
}

pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// `12096` as `12,096`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}
