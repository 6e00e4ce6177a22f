//! A generic, table-driven finite state machine.
//!
//! A machine is a static list of [`Transition`] rows — (state, input) → (next state, actions), with an
//! optional guard — compiled once into a dense index so that a step is one array lookup plus, for guarded
//! rows, a few function calls. An input that no row allows is a typed [`Rejected`], never a panic; the
//! caller counts and logs it.

use std::fmt;

/// An enum usable as a state or an input: dense indices `0..COUNT` and a stable name.
pub trait Symbol: Copy + Eq + fmt::Debug + 'static {
    /// How many values there are.
    const COUNT: usize;
    /// The value's dense index, `0..COUNT`.
    fn index(self) -> usize;
    /// The value's stable name (traces, counters, logs).
    fn name(self) -> &'static str;
}

/// A named predicate over the machine's context, so tables read as documentation and rejections can
/// say which guard failed.
pub struct Guard<C: ?Sized> {
    /// The guard's name, as rejections say it.
    pub name: &'static str,
    /// Whether it holds for a context.
    pub check: fn(&C) -> bool,
}

/// One row of a transition table.
pub struct Transition<S, I, C: ?Sized, A: 'static> {
    /// The state the row applies in.
    pub from: S,
    /// The input it takes.
    pub on: I,
    /// Checked in row order; the first row whose guard holds (or that has none) wins.
    pub guard: Option<Guard<C>>,
    /// The state it moves to.
    pub to: S,
    /// What the engine does on it, in order.
    pub actions: &'static [A],
}

impl<S: Symbol, I: Symbol, C: ?Sized, A> Transition<S, I, C, A> {
    /// A row that changes nothing and does nothing: the input is expected and absorbed (e.g. a second
    /// CHANNEL_PROGRESS). Absorbed inputs are not recorded in traces.
    pub fn is_absorb(&self) -> bool {
        self.from == self.to && self.actions.is_empty()
    }
}

/// Why an input was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected<S: Symbol, I: Symbol> {
    #[error("{} is not allowed in state {}", .input.name(), .state.name())]
    /// No row takes `input` in `state`.
    NotAllowed {
        /// The state.
        state: S,
        /// The input.
        input: I,
    },
    #[error("{} in state {}: guard {guard} does not hold", .input.name(), .state.name())]
    /// Every row that takes `input` in `state` is guarded, and no guard holds (the last one is named).
    GuardFailed {
        /// The state.
        state: S,
        /// The input.
        input: I,
        /// The guard that does not hold.
        guard: &'static str,
    },
}

/// A compiled transition table.
pub struct Table<S: 'static, I: 'static, C: ?Sized + 'static, A: 'static> {
    /// The rows as written.
    rows: &'static [Transition<S, I, C, A>],
    /// For each (state, input) cell: where its candidate rows start in `order` and how many there are.
    cells: Box<[(u16, u16)]>,
    /// Row indices grouped by cell, in table order.
    order: Box<[u16]>,
}

/// A table that cannot be compiled: a mistake in the code, found by the table's own test.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("row {row}: an unguarded row for ({state}, {input}) hides the rows after it")]
    /// An unguarded row hides the rows after it.
    Unreachable {
        /// The hidden row.
        row: usize,
        /// Its state.
        state: &'static str,
        /// Its input.
        input: &'static str,
    },
    /// More rows than the index holds.
    #[error("table has more than 65535 rows")]
    TooLarge,
}

impl<S: Symbol, I: Symbol, C: ?Sized, A> Table<S, I, C, A> {
    /// Indexes `rows` by (state, input); refuses a table where an unguarded row hides the rows after it.
    pub fn new(rows: &'static [Transition<S, I, C, A>]) -> Result<Self, TableError> {
        if rows.len() > usize::from(u16::MAX) {
            return Err(TableError::TooLarge);
        }
        let ncell = S::COUNT * I::COUNT;
        let mut grouped: Vec<Vec<u16>> = vec![Vec::new(); ncell];
        for (i, row) in rows.iter().enumerate() {
            let cell = row.from.index() * I::COUNT + row.on.index();
            if let Some(&prev) = grouped[cell].last()
                && rows[usize::from(prev)].guard.is_none()
            {
                return Err(TableError::Unreachable {
                    row: i,
                    state: row.from.name(),
                    input: row.on.name(),
                });
            }
            grouped[cell].push(i as u16);
        }
        let mut cells = Vec::with_capacity(ncell);
        let mut order = Vec::with_capacity(rows.len());
        for group in grouped {
            cells.push((order.len() as u16, group.len() as u16));
            order.extend(group);
        }
        Ok(Table {
            rows,
            cells: cells.into_boxed_slice(),
            order: order.into_boxed_slice(),
        })
    }

    /// The row that `input` takes in `state` under `ctx`.
    #[inline]
    pub fn step(
        &self,
        state: S,
        input: I,
        ctx: &C,
    ) -> Result<&'static Transition<S, I, C, A>, Rejected<S, I>> {
        let (start, len) = self.cells[state.index() * I::COUNT + input.index()];
        if len == 0 {
            return Err(Rejected::NotAllowed { state, input });
        }
        let mut failed = "";
        for &r in &self.order[usize::from(start)..usize::from(start + len)] {
            let row = &self.rows[usize::from(r)];
            match &row.guard {
                None => return Ok(row),
                Some(g) if (g.check)(ctx) => return Ok(row),
                Some(g) => failed = g.name,
            }
        }
        Err(Rejected::GuardFailed {
            state,
            input,
            guard: failed,
        })
    }

    /// Whether any row handles `input` in `state` (guards aside).
    pub fn handles(&self, state: S, input: I) -> bool {
        self.cells[state.index() * I::COUNT + input.index()].1 > 0
    }

    /// The rows, as given.
    pub fn rows(&self) -> &'static [Transition<S, I, C, A>] {
        self.rows
    }
}

/// Implements [`Symbol`] for a fieldless enum listed variant by variant with its name.
#[macro_export]
macro_rules! symbol_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
        #[repr(u8)]
        $vis enum $name { $($(#[$vmeta])* $variant),* }

        #[allow(dead_code)]
        impl $name {
            /// Every value, in index order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];
            /// The value whose index is `i`.
            pub fn from_index(i: usize) -> Option<$name> {
                Self::ALL.get(i).copied()
            }
        }

        impl $crate::fsm::Symbol for $name {
            const COUNT: usize = [$($text),*].len();
            #[inline]
            fn index(self) -> usize { self as usize }
            fn name(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str($crate::fsm::Symbol::name(*self))
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    symbol_enum! {
        enum Light { Red => "RED", Green => "GREEN", Yellow => "YELLOW" }
    }
    symbol_enum! {
        enum Signal { Go => "GO", Stop => "STOP", Tick => "TICK" }
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Act {
        Beep,
    }

    struct Ctx {
        cars_waiting: bool,
    }

    static ROWS: &[Transition<Light, Signal, Ctx, Act>] = &[
        Transition {
            from: Light::Red,
            on: Signal::Go,
            guard: Some(Guard {
                name: "cars_waiting",
                check: |c: &Ctx| c.cars_waiting,
            }),
            to: Light::Green,
            actions: &[Act::Beep],
        },
        Transition {
            from: Light::Green,
            on: Signal::Stop,
            guard: None,
            to: Light::Yellow,
            actions: &[],
        },
        Transition {
            from: Light::Green,
            on: Signal::Tick,
            guard: None,
            to: Light::Green,
            actions: &[],
        },
    ];

    #[test]
    fn steps_follow_rows_and_guards() {
        let t = Table::new(ROWS).unwrap();
        let yes = Ctx { cars_waiting: true };
        let no = Ctx {
            cars_waiting: false,
        };
        let row = t.step(Light::Red, Signal::Go, &yes).unwrap();
        assert_eq!((row.to, row.actions), (Light::Green, &[Act::Beep][..]));
        assert_eq!(
            t.step(Light::Red, Signal::Go, &no).err(),
            Some(Rejected::GuardFailed {
                state: Light::Red,
                input: Signal::Go,
                guard: "cars_waiting"
            })
        );
        let Err(err) = t.step(Light::Yellow, Signal::Go, &yes) else {
            panic!("GO must not be allowed in YELLOW");
        };
        assert_eq!(err.to_string(), "GO is not allowed in state YELLOW");
        assert!(t.step(Light::Green, Signal::Tick, &no).unwrap().is_absorb());
        assert!(!t.handles(Light::Yellow, Signal::Tick));
    }

    static HIDDEN: &[Transition<Light, Signal, Ctx, Act>] = &[
        Transition {
            from: Light::Red,
            on: Signal::Go,
            guard: None,
            to: Light::Green,
            actions: &[],
        },
        Transition {
            from: Light::Red,
            on: Signal::Go,
            guard: None,
            to: Light::Yellow,
            actions: &[],
        },
    ];

    #[test]
    fn a_hidden_row_is_a_table_error() {
        assert!(matches!(
            Table::new(HIDDEN),
            Err(TableError::Unreachable { row: 1, .. })
        ));
    }
}
