//! `Statement`: SQL text and its bound values, assembled over any sqlx database.
//!
//! sqlx's `QueryBuilder` borrows itself for as long as its values live, which generic code cannot end
//! before the builder is dropped: SQLite's arguments borrow their values (`SqliteArguments<'q>`), and
//! behind a generic database the compiler cannot shorten that lifetime as it does for a concrete one.
//! Here the text and the values are kept apart and handed to `sqlx::query_with` separately, so each
//! borrows only for the statement's run. Only literals chosen by the caller are pushed as SQL; every
//! value is bound.

use sqlx::error::BoxDynError;
use sqlx::{Arguments, Database, Encode, Type};

use crate::error::StoreError;

pub(super) struct Statement<'a, DB: Database> {
    sql: String,
    args: Result<DB::Arguments<'a>, BoxDynError>,
}

impl<'a, DB: Database> Statement<'a, DB> {
    pub(super) fn new(sql: &str) -> Self {
        Self {
            sql: sql.to_owned(),
            args: Ok(DB::Arguments::default()),
        }
    }

    /// Appends SQL text.
    pub(super) fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Binds `value` and appends its placeholder. An encoding error is kept and returned when the
    /// statement runs.
    pub(super) fn bind<T: 'a + Encode<'a, DB> + Type<DB>>(&mut self, value: T) -> &mut Self {
        if let Ok(args) = &mut self.args {
            let added = args
                .add(value)
                .and_then(|()| args.format_placeholder(&mut self.sql).map_err(BoxDynError::from));
            if let Err(error) = added {
                self.args = Err(error);
            }
        }
        self
    }

    /// Appends `VALUES (...), (...)`: one tuple per item, its values bound by `each` in order.
    pub(super) fn values<I>(
        &mut self,
        items: impl IntoIterator<Item = I>,
        mut each: impl FnMut(&mut Tuple<'_, 'a, DB>, I),
    ) {
        self.sql.push_str("VALUES ");
        for (i, item) in items.into_iter().enumerate() {
            self.sql.push_str(if i == 0 { "(" } else { ", (" });
            each(
                &mut Tuple {
                    statement: self,
                    first: true,
                },
                item,
            );
            self.sql.push(')');
        }
    }

    /// The text and the values, for `sqlx::query_with(&sql, args)`: apart, so that the text is borrowed
    /// only while the statement runs. An encoding error met while binding surfaces here.
    pub(super) fn into_parts(self) -> Result<(String, DB::Arguments<'a>), StoreError> {
        let args = self.args.map_err(|e| StoreError::Database(sqlx::Error::Encode(e)))?;
        Ok((self.sql, args))
    }
}

/// One tuple of a `VALUES` list: values separated by commas.
pub(super) struct Tuple<'s, 'a, DB: Database> {
    statement: &'s mut Statement<'a, DB>,
    first: bool,
}

impl<'a, DB: Database> Tuple<'_, 'a, DB> {
    /// Binds the tuple's next value.
    pub(super) fn bind<T: 'a + Encode<'a, DB> + Type<DB>>(&mut self, value: T) -> &mut Self {
        if !self.first {
            self.statement.push(", ");
        }
        self.first = false;
        self.statement.bind(value);
        self
    }
}
