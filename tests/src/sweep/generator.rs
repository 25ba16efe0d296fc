//! Makes one request from a seed: real values mixed with hostile ones,
//! within the fields' stated rules and either side of them.

use super::*;

/// How a case's request is made.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Every field left out.
    Empty,
    /// Real values only: the request may well succeed.
    Plausible,
    /// Hostile values mixed with real ones: each value is hostile with
    /// this chance in percent, so that some requests carry one bad value
    /// among good ones and others little but bad ones.
    Hostile(usize),
}

impl Shape {
    pub fn of_case(case: usize, seed: u64) -> Shape {
        match case {
            0 => Shape::Plausible,
            1 => Shape::Empty,
            _ => Shape::Hostile(*Rng(seed).pick(&[15, 35, 65, 90])),
        }
    }
}

/// Strings that break naive handling, whole.
pub const NASTY_STRINGS: &[&str] = &[
    "\0",
    "a\0b",
    "\u{1}\u{2}\u{3}",
    "\u{7}",
    "\u{8}",
    "\u{1b}[31mred\u{1b}[0m",
    "\u{7f}",
    "\u{80}\u{85}\u{9f}",
    "\u{202e}drow\u{202c}",
    "\u{2066}x\u{2069}",
    "\u{200b}",
    "\u{feff}",
    "\u{200d}\u{200c}",
    "e\u{301}",
    "Z\u{36b}\u{303}\u{36a}\u{350}\u{35b}\u{330}\u{326}",
    "\u{301}",
    "😀",
    "👩\u{200d}👩\u{200d}👧",
    "\u{10ffff}",
    "\u{e0001}\u{e0041}",
    "\u{fffd}",
    "\u{fffe}\u{ffff}",
    " ",
    "\t",
    "\n",
    "\r\n",
    "\u{a0}",
    "\u{3000}",
    "\u{2028}\u{2029}",
    "İ",
    "ß",
    "ﬃ",
    "ΣΑΣ",
    "'; drop table users; --",
    "%",
    "_",
    "\\",
    "%00",
    "${jndi:ldap://x}",
    "{{7*7}}",
    "%s%n",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "null",
    "-1",
    "9223372036854775808",
    "@",
    "a@",
    "@b",
    "a@b@c",
    "\"quoted\"@example.com",
    "x@[::1]",
    "/",
    "//",
    "/chat.v1.ChatService/",
    "Bearer ",
];

/// Characters slipped into otherwise real values.
pub const ODD_CHARS: &[char] = &[
    '\0',
    '\u{1}',
    '\u{7}',
    '\u{1b}',
    '\u{7f}',
    '\u{80}',
    '\u{85}',
    '\u{9f}',
    '\u{202e}',
    '\u{2066}',
    '\u{2069}',
    '\u{200b}',
    '\u{200d}',
    '\u{feff}',
    '\u{301}',
    '\u{36b}',
    '😀',
    '\u{10ffff}',
    '\u{e0001}',
    '\u{fffd}',
    '\u{ffff}',
    '\u{a0}',
    '\u{3000}',
    '\u{2028}',
    ' ',
    '\t',
    '\n',
    '\r',
    'İ',
    'ß',
    'Σ',
    '%',
    '_',
    '\\',
    '\'',
    '"',
    '@',
    '/',
];

/// What huge strings are made of: one, two and four bytes a character,
/// and characters that are not text on their own.
pub const FILLS: &[&str] = &["a", "é", "😀", "\u{202e}", "a\u{301}", "\0", "\u{200b}"];

/// Lengths tried when a field states none.
pub const LENGTHS: &[i64] = &[64, 72, 100, 255, 256, 512, 4096];

/// Integer extremes tried in every integer field, then clamped to its type.
pub const EXTREMES: &[i128] = &[
    0,
    1,
    -1,
    2,
    i64::MIN as i128,
    i64::MIN as i128 + 1,
    i64::MAX as i128,
    i64::MAX as i128 - 1,
    i32::MIN as i128,
    i32::MAX as i128,
    i32::MAX as i128 + 1,
    u32::MAX as i128,
    u32::MAX as i128 + 1,
    u64::MAX as i128,
    1 << 53,
    999_999_999,
];

/// The numbers a field's `validate.rules` state, to try either side of.
#[derive(Default)]
pub struct Rules {
    /// Lengths and bounds of the field's values (of its items, for a list).
    pub values: Vec<i64>,
    /// Bounds on a list's number of items.
    pub counts: Vec<i64>,
}

impl Rules {
    pub fn of(field: &FieldDescriptor) -> Rules {
        let mut rules = Rules::default();
        let Some(extension) = field.parent_pool().get_extension_by_name("validate.rules") else {
            return rules;
        };
        let options = field.options();
        if !options.has_extension(&extension) {
            return rules;
        }
        if let Value::Message(field_rules) = options.get_extension(&extension).as_ref() {
            for (kind, value) in field_rules.fields() {
                match (kind.name(), value) {
                    ("repeated", Value::Message(repeated)) => {
                        for (rule, value) in repeated.fields() {
                            if rule.name() == "items" {
                                numbers_in(value, &mut rules.values);
                            } else {
                                numbers_in(value, &mut rules.counts);
                            }
                        }
                    }
                    (_, value) => numbers_in(value, &mut rules.values),
                }
            }
        }
        rules
    }
}

pub fn numbers_in(value: &Value, out: &mut Vec<i64>) {
    match value {
        Value::I32(n) => out.push(i64::from(*n)),
        Value::I64(n) => out.push(*n),
        Value::U32(n) => out.push(i64::from(*n)),
        Value::U64(n) => out.push(i64::try_from(*n).unwrap_or(i64::MAX)),
        Value::EnumNumber(n) => out.push(i64::from(*n)),
        Value::List(items) => items.iter().for_each(|item| numbers_in(item, out)),
        Value::Message(message) => message.fields().for_each(|(_, v)| numbers_in(v, out)),
        _ => {}
    }
}

/// Makes one request from a seed.
pub struct Generator<'a> {
    pub rng: Rng,
    pub known: &'a Known,
    /// Ids this sender must not be aimed at; moved out of the way.
    pub protected: &'a [i64],
    pub shape: Shape,
    /// Bytes of strings this request may still carry.
    pub budget: usize,
}

impl<'a> Generator<'a> {
    pub fn new(seed: u64, known: &'a Known, protected: &'a [i64], shape: Shape) -> Generator<'a> {
        Generator {
            rng: Rng(seed),
            known,
            protected,
            shape,
            budget: REQUEST_BUDGET,
        }
    }

    /// Whether this value is to be real rather than hostile.
    pub fn plausible(&mut self) -> bool {
        match self.shape {
            Shape::Empty | Shape::Plausible => true,
            Shape::Hostile(percent) => self.rng.below(100) >= percent,
        }
    }

    pub fn message(&mut self, descriptor: &MessageDescriptor, depth: usize) -> DynamicMessage {
        let mut message = DynamicMessage::new(descriptor.clone());
        if self.shape == Shape::Empty || depth > 3 {
            return message;
        }
        let mut oneofs_set = HashSet::new();
        for field in descriptor.fields() {
            // At most one field of a real oneof; optional fields, nested
            // messages among them, are left out now and then.
            if let Some(oneof) = field.containing_oneof().filter(|o| !o.is_synthetic()) {
                if oneofs_set.contains(oneof.name()) || self.rng.one_in(2) {
                    continue;
                }
                oneofs_set.insert(oneof.name().to_owned());
            } else if field.supports_presence() && self.rng.one_in(3) {
                continue;
            }
            let value = self.field(&field, depth);
            message.set_field(&field, value);
        }
        self.confirm(&mut message, descriptor);
        message
    }

    /// A field named after another (`password_confirm`, `password`) must
    /// often repeat it: otherwise no request would get past the check
    /// that they agree.
    pub fn confirm(&mut self, message: &mut DynamicMessage, descriptor: &MessageDescriptor) {
        let fields: Vec<FieldDescriptor> = descriptor.fields().collect();
        for copy in &fields {
            let Some(original) = fields.iter().find(|original| {
                copy.name().starts_with(&format!("{}_", original.name()))
                    && original.kind() == copy.kind()
                    && original.is_list() == copy.is_list()
            }) else {
                continue;
            };
            if message.has_field(original) && (self.shape == Shape::Plausible || self.rng.one_in(2))
            {
                let value = message.get_field(original).into_owned();
                message.set_field(copy, value);
            }
        }
    }

    pub fn field(&mut self, field: &FieldDescriptor, depth: usize) -> Value {
        let rules = Rules::of(field);
        let kind = field.kind();
        if field.is_map() {
            let entry = kind.as_message().expect("a map's entry message");
            let (key, value) = (entry.map_entry_key_field(), entry.map_entry_value_field());
            let count = self.count(&rules.counts);
            let mut map = HashMap::new();
            for _ in 0..count {
                let key_value = self.single(&key, &key.kind(), &rules.values, depth);
                if let Some(key_value) = key_value.into_map_key() {
                    map.insert(key_value, self.single(&value, &value.kind(), &[], depth));
                }
            }
            Value::Map(map)
        } else if field.is_list() {
            let count = self.count(&rules.counts);
            let mut items: Vec<Value> = (0..count)
                .map(|_| self.single(field, &kind, &rules.values, depth))
                .collect();
            if self.shape == Shape::Plausible {
                let mut seen = Vec::new();
                items.retain(|item| {
                    let new = !seen.contains(item);
                    seen.push(item.clone());
                    new
                });
            } else if count > 1 && !self.plausible() {
                // Duplicates: every item the same, or the first again at
                // the end, as far as the budget allows.
                let first = items[0].clone();
                let copies = if self.rng.one_in(2) { count - 1 } else { 1 };
                let cost = weight(&first) * copies;
                if cost <= self.budget {
                    self.budget -= cost;
                    items[count - copies..].fill(first);
                }
            }
            Value::List(items)
        } else {
            self.single(field, &kind, &rules.values, depth)
        }
    }

    /// How many items a list gets.
    pub fn count(&mut self, bounds: &[i64]) -> usize {
        if self.plausible() {
            return 1 + self.rng.below(3);
        }
        match self.rng.below(5) {
            0 => 0,
            1 => 1,
            2 => 150,
            3 if !bounds.is_empty() => {
                let bound = *self.rng.pick(bounds);
                usize::try_from(bound - 1 + self.rng.below(3) as i64).unwrap_or(0)
            }
            _ => 2 + self.rng.below(4),
        }
    }

    pub fn single(
        &mut self,
        field: &FieldDescriptor,
        kind: &Kind,
        bounds: &[i64],
        depth: usize,
    ) -> Value {
        match kind {
            Kind::String => Value::String(self.string(field.name(), bounds)),
            Kind::Bytes => {
                Value::Bytes(Bytes::from(self.string(field.name(), bounds).into_bytes()))
            }
            Kind::Bool => Value::Bool(self.rng.one_in(2)),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                let ids = self.known.ids_for(field);
                let n = self.integer((i64::MIN.into(), i64::MAX.into()), bounds, Some(&ids));
                Value::I64(i64::try_from(n).expect("within range"))
            }
            Kind::Uint64 | Kind::Fixed64 => {
                let ids = self.known.ids_for(field);
                let n = self.integer((0, u64::MAX.into()), bounds, Some(&ids));
                Value::U64(u64::try_from(n).expect("within range"))
            }
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                let n = self.integer((i32::MIN.into(), i32::MAX.into()), bounds, None);
                Value::I32(i32::try_from(n).expect("within range"))
            }
            Kind::Uint32 | Kind::Fixed32 => {
                let n = self.integer((0, u32::MAX.into()), bounds, None);
                Value::U32(u32::try_from(n).expect("within range"))
            }
            Kind::Double => Value::F64(self.float()),
            Kind::Float => Value::F32(self.float() as f32),
            Kind::Enum(descriptor) => {
                let defined: Vec<i32> = descriptor.values().map(|v| v.number()).collect();
                let highest = defined.iter().copied().max().unwrap_or(0);
                if self.plausible() || self.rng.one_in(2) {
                    Value::EnumNumber(*self.rng.pick(&defined))
                } else {
                    let unknown = [highest.saturating_add(1), 7, -1, i32::MAX, i32::MIN];
                    Value::EnumNumber(*self.rng.pick(&unknown))
                }
            }
            Kind::Message(descriptor) => Value::Message(self.message(descriptor, depth + 1)),
        }
    }

    pub fn string(&mut self, field: &str, bounds: &[i64]) -> String {
        let value = if self.plausible() {
            self.real_string(field)
        } else {
            self.hostile_string(field, bounds)
        };
        self.budget = self.budget.saturating_sub(value.len());
        value
    }

    pub fn real_string(&mut self, field: &str) -> String {
        match self.rng.below(8) {
            0 => String::new(),
            // Names and emails nobody has taken yet, so that a request
            // may make something new.
            1 | 2 => {
                let fresh = format!("{:x}", self.rng.next_u64() >> 24);
                if field.contains("email") {
                    format!("new-{fresh}@example.com")
                } else if field.contains("password") {
                    format!("{fresh} is long enough")
                } else {
                    format!("new-{fresh}")
                }
            }
            _ => {
                let known = self.known.strings_for(field);
                (*self.rng.pick(&known)).clone()
            }
        }
    }

    pub fn hostile_string(&mut self, field: &str, bounds: &[i64]) -> String {
        match self.rng.below(8) {
            0 => String::new(),
            1 => {
                let fill = *self.rng.pick(FILLS);
                let chars = *self.rng.pick(&[5_000, 100_000]);
                if chars * fill.len() <= self.budget {
                    fill.repeat(chars.div_ceil(fill.chars().count()))
                } else {
                    (*self.rng.pick(NASTY_STRINGS)).to_owned()
                }
            }
            2 => (*self.rng.pick(NASTY_STRINGS)).to_owned(),
            3 => {
                // A real value with one odd character at its start, middle
                // or end.
                let mut value: Vec<char> = self.real_string(field).chars().collect();
                let at = match self.rng.below(3) {
                    0 => 0,
                    1 => value.len() / 2,
                    _ => value.len(),
                };
                value.insert(at, *self.rng.pick(ODD_CHARS));
                value.into_iter().collect()
            }
            4 => {
                // Either side of a stated length, in characters of one,
                // two or four bytes.
                let base = match bounds {
                    [] => *self.rng.pick(LENGTHS),
                    bounds => *self.rng.pick(bounds),
                };
                let chars = usize::try_from(base - 1 + self.rng.below(3) as i64).unwrap_or(0);
                let fill = *self.rng.pick(&["x", "é", "😀"]);
                if chars * fill.len() <= self.budget {
                    fill.repeat(chars)
                } else {
                    String::new()
                }
            }
            5 => {
                // Random text, odd characters and plain ones.
                let chars = 1 + self.rng.below(64);
                (0..chars)
                    .map(|_| {
                        if self.rng.one_in(2) {
                            *self.rng.pick(ODD_CHARS)
                        } else {
                            char::from(b'a' + self.rng.below(26) as u8)
                        }
                    })
                    .collect()
            }
            6 => {
                let real = self.real_string(field);
                match self.rng.below(3) {
                    0 => format!(" {real} "),
                    1 => format!("\u{a0}{real}\u{3000}"),
                    _ => format!("{real}{real}"),
                }
            }
            _ => {
                let real = self.real_string(field);
                match self.rng.below(3) {
                    0 => real.to_uppercase(),
                    1 => real.replace('i', "İ"),
                    _ => real.replace('s', "ſ"),
                }
            }
        }
    }

    /// An integer within `min..=max`. A 64-bit one may be an id: then
    /// it is often one of `ids`, or next to one.
    pub fn integer(
        &mut self,
        (min, max): (i128, i128),
        bounds: &[i64],
        ids: Option<&[i64]>,
    ) -> i128 {
        let may_be_id = ids.is_some();
        let ids = ids.unwrap_or_default();
        let n = if self.plausible() {
            if !ids.is_empty() && !self.rng.one_in(4) {
                i128::from(*self.rng.pick(ids))
            } else {
                self.rng.below(101) as i128
            }
        } else {
            match self.rng.below(5) {
                0 | 1 => *self.rng.pick(EXTREMES),
                2 if !bounds.is_empty() => {
                    i128::from(*self.rng.pick(bounds)) - 1 + self.rng.below(3) as i128
                }
                // A neighbour of a real id: likely a thing that does not
                // exist, or somebody else's.
                3 if !ids.is_empty() => {
                    i128::from(*self.rng.pick(ids)) + self.rng.below(3) as i128 - 1
                }
                _ => i128::from(self.rng.next_u64() as i64),
            }
        };
        let n = n.clamp(min, max);
        if may_be_id && self.protected.iter().any(|&id| i128::from(id) == n) {
            // Far past every id the sweep makes: aimed at nothing.
            n + (1 << 40)
        } else {
            n
        }
    }

    pub fn float(&mut self) -> f64 {
        *self.rng.pick(&[
            0.0,
            -0.0,
            1.5,
            -1.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            f64::MIN_POSITIVE,
        ])
    }
}

/// Roughly how many bytes a value takes on the wire.
pub fn weight(value: &Value) -> usize {
    match value {
        Value::String(text) => text.len(),
        Value::Bytes(bytes) => bytes.len(),
        Value::Message(message) => message.encoded_len(),
        Value::List(items) => items.iter().map(weight).sum(),
        Value::Map(entries) => entries.values().map(|value| weight(value) + 16).sum(),
        _ => 16,
    }
}
