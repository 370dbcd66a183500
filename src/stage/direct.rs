//! The direct path of a transform: the commonest shapes of jq programs, run on the event's JSON
//! text without building jaq's values, with exactly jaq's result. Whatever the direct path is
//! not sure of, jaq does instead, for that event ([`Bail`]).
//!
//! A program takes the direct path when it is built only from (the book lists them too, in
//! `docs/src/concepts/record-stage.md`):
//! - `.` and field paths `.a`, `.a.b`, `."a b"`, `.["a"]` (no `?`, no indices or iteration);
//! - literals: `null`, `true`, `false`, numbers (`1`, `-2`, `1.5`), strings without
//!   interpolation or format;
//! - comparisons `==`, `!=`, `<`, `<=`, `>`, `>=` between any of these;
//! - `select(f)` with `f` any of these;
//! - object construction `{a, b: f, "c d": f}` with constant keys (each named once);
//! - pipes `f | g` of all of the above.
//!
//! Anything else (other builtins, `def`, variables, `?`, `,`, arithmetic, …) runs in jaq.
//!
//! jq semantics as jaq defines them: `.a` on `null` is `null`, a missing key is `null`, `.a` on
//! anything else but an object is an error; objects keep the order of their keys (the event's
//! order, or the order written in the program); values are compared in jq's order of types
//! (`null` < booleans < numbers < strings < arrays < objects), numbers as jaq compares its
//! integers and decimals, strings by their bytes. An error of any kind, a big integer, a
//! comparison of two arrays or objects, JSON text that jaq would write differently (white space,
//! escapes jaq writes otherwise such as `\/` or `\u00e9`, `-0`, a key twice in an object) or that
//! is not UTF-8 make the direct path [`Bail`]: jaq then runs the program on that event and gives
//! its own result or message. The event's own text is copied to the output when jaq would write
//! it identically, so `.` and a `select(…)` that keeps the event cost a scan of the event.

use std::{borrow::Cow, cmp::Ordering};

use jaq_core::{
    load::{
        lex::StrPart,
        parse::{BinaryOp, Term},
    },
    ops::Cmp,
    path::{Opt, Part},
};
use serde_json::value::RawValue;

use super::json_out::write_text;
use crate::json::{check_nesting, MAX_NESTING};
use raw::{canonical, Members};

/// The direct path cannot give jaq's result for this event with certainty: jaq runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bail;

/// A program in the direct path's shapes.
#[derive(Clone, Debug)]
pub struct Direct {
    filter: Filter,
    /// The program builds objects: its output may nest deeper than the event.
    constructs: bool,
    /// The program reads fields: the event's members are listed first.
    reads_fields: bool,
}

/// A filter yielding at most one value.
#[derive(Clone, Debug)]
enum Filter {
    /// `.`
    Id,
    /// `f.key`
    Field(Box<Filter>, String),
    /// `f | g`
    Pipe(Box<Filter>, Box<Filter>),
    /// `select(f)`
    Select(Box<Filter>),
    /// `l <op> r`
    Cmp(Box<Filter>, Cmp, Box<Filter>),
    /// `{k: f, …}`
    Object(Vec<(String, Filter)>),
    /// A constant.
    Lit(Lit),
}

/// A constant of the program.
#[derive(Clone, Debug)]
enum Lit {
    Null,
    Bool(bool),
    /// A number: its value and the text jaq writes for it.
    Num(Number, String),
    Str(String),
}

/// A number as jaq holds it: a machine integer, or a decimal compared as a float.
#[derive(Clone, Copy, Debug)]
enum Number {
    Int(isize),
    Float(f64),
}

impl Direct {
    /// The direct form of `code`, or `None` when the program has another shape (or does not
    /// parse: jaq's compiler reports that).
    pub fn compile(code: &str) -> Option<Direct> {
        let term = jaq_core::load::parse(code, |parser| parser.term())?;
        let filter = filter(&term)?;
        Some(Direct {
            constructs: filter.any(&|f| matches!(f, Filter::Object(_))),
            reads_fields: filter.any(&|f| matches!(f, Filter::Field(..))),
            filter,
        })
    }

    /// Runs the program on `event` (JSON text, nested at most [`MAX_NESTING`] levels: the
    /// caller checked) and returns the value it yields as compact JSON text, as jaq writes it,
    /// or `None` when it yields nothing. An `admitted` event was parsed as JSON already
    /// ([`super::Stage::admit`]): it is parsed again only when the program reads its fields.
    ///
    /// # Errors
    /// [`Bail`]: jaq must run the program on this event instead.
    pub fn run(&self, event: &[u8], admitted: bool) -> Result<Option<Vec<u8>>, Bail> {
        const WHITE: [char; 4] = [' ', '\t', '\n', '\r'];
        let text = std::str::from_utf8(event).map_err(|_| Bail)?;
        let trimmed = text.trim_matches(WHITE);
        // serde_json checks the whole text is one value with white space around it.
        let root = if self.reads_fields && trimmed.starts_with('{') {
            let members: Members<'_> = serde_json::from_str(text).map_err(|_| Bail)?;
            Root {
                text: trimmed,
                members: Some(members.0),
            }
        } else {
            if !admitted {
                serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|_| Bail)?;
            }
            Root {
                text: trimmed,
                members: None,
            }
        };
        let Some(value) = eval(&self.filter, V::Root, &root)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(match value {
            V::Root => root.text.len(),
            _ => 256,
        });
        write(&value, &root, &mut out)?;
        if out.len() > super::transform::MAX_OUTPUT_BYTES
            || (self.constructs && check_nesting(&out, MAX_NESTING).is_err())
        {
            return Err(Bail);
        }
        Ok(Some(out))
    }
}

impl Filter {
    /// True when `test` holds for this filter or one inside it.
    fn any(&self, test: &impl Fn(&Filter) -> bool) -> bool {
        test(self)
            || match self {
                Filter::Id | Filter::Lit(_) => false,
                Filter::Field(f, _) | Filter::Select(f) => f.any(test),
                Filter::Pipe(l, r) | Filter::Cmp(l, _, r) => l.any(test) || r.any(test),
                Filter::Object(members) => members.iter().any(|(_, f)| f.any(test)),
            }
    }
}

/// The direct form of a parsed term, if it has one.
fn filter(term: &Term<&str>) -> Option<Filter> {
    Some(match term {
        Term::Id => Filter::Id,
        Term::Path(base, path) => {
            let mut f = filter(base)?;
            for (part, opt) in &path.0 {
                let (Part::Index(key), Opt::Essential) = (part, opt) else {
                    return None;
                };
                f = Filter::Field(Box::new(f), constant_str(key)?);
            }
            f
        }
        Term::BinOp(l, BinaryOp::Pipe(None), r) => {
            Filter::Pipe(Box::new(filter(l)?), Box::new(filter(r)?))
        }
        Term::BinOp(l, BinaryOp::Cmp(op), r) => {
            Filter::Cmp(Box::new(filter(l)?), *op, Box::new(filter(r)?))
        }
        Term::Call("select", args) if args.len() == 1 => {
            Filter::Select(Box::new(filter(&args[0])?))
        }
        Term::Call("null", args) if args.is_empty() => Filter::Lit(Lit::Null),
        Term::Call("true", args) if args.is_empty() => Filter::Lit(Lit::Bool(true)),
        Term::Call("false", args) if args.is_empty() => Filter::Lit(Lit::Bool(false)),
        Term::Num(text) => Filter::Lit(number(text, false)?),
        Term::Neg(inner) => match &**inner {
            Term::Num(text) => Filter::Lit(number(text, true)?),
            _ => return None,
        },
        Term::Str(..) => Filter::Lit(Lit::Str(constant_str(term)?)),
        Term::Obj(entries) => {
            let mut members: Vec<(String, Filter)> = Vec::with_capacity(entries.len());
            for (key, value) in entries {
                let key = constant_str(key)?;
                if members.iter().any(|(seen, _)| *seen == key) {
                    return None;
                }
                let value = match value {
                    Some(value) => filter(value)?,
                    None => Filter::Field(Box::new(Filter::Id), key.clone()),
                };
                members.push((key, value));
            }
            Filter::Object(members)
        }
        _ => return None,
    })
}

/// The text of a string literal without interpolation or format (`"a\nb"`, or `a` in `.a`).
fn constant_str(term: &Term<&str>) -> Option<String> {
    let Term::Str(None, parts) = term else {
        return None;
    };
    let mut text = String::new();
    for part in parts {
        match part {
            StrPart::Str(s) => text.push_str(s),
            StrPart::Char(c) => text.push(*c),
            StrPart::Term(_) => return None,
        }
    }
    Some(text)
}

/// A number literal as jaq compiles it: an integer if it fits a machine integer, a decimal
/// (written as in the program) otherwise; `negative` for `-` before it. Big integers are left
/// to jaq.
fn number(text: &str, negative: bool) -> Option<Lit> {
    if let Ok(int) = text.parse::<isize>() {
        let int = if negative { int.checked_neg()? } else { int };
        return Some(Lit::Num(Number::Int(int), int.to_string()));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    let (value, text) = match (negative, text.strip_prefix('-')) {
        (false, _) => (value, text.to_owned()),
        (true, Some(positive)) => (-value, positive.to_owned()),
        (true, None) => (-value, format!("-{text}")),
    };
    Some(Lit::Num(Number::Float(value), text))
}

/// The event: its text (without surrounding white space) and, for an object, its members.
struct Root<'e> {
    text: &'e str,
    members: Option<Vec<(Cow<'e, str>, &'e RawValue)>>,
}

/// A value during the run.
#[derive(Clone, Debug)]
enum V<'e, 'p> {
    /// The event itself.
    Root,
    /// `null` (a missing key, or `.a` of `null`).
    Null,
    /// A boolean a comparison gave.
    Bool(bool),
    /// A value of the event, as its JSON text.
    Raw(&'e str),
    /// A constant of the program.
    Lit(&'p Lit),
    /// An object the program built.
    Object(Vec<(&'p str, V<'e, 'p>)>),
}

fn eval<'e, 'p>(
    filter: &'p Filter,
    input: V<'e, 'p>,
    root: &Root<'e>,
) -> Result<Option<V<'e, 'p>>, Bail> {
    Ok(Some(match filter {
        Filter::Id => input,
        Filter::Lit(lit) => V::Lit(lit),
        Filter::Field(base, key) => match eval(base, input, root)? {
            Some(value) => field(value, key, root)?,
            None => return Ok(None),
        },
        Filter::Pipe(l, r) => match eval(l, input, root)? {
            Some(value) => return eval(r, value, root),
            None => return Ok(None),
        },
        Filter::Select(cond) => match eval(cond, input.clone(), root)? {
            Some(value) if truthy(&value, root)? => input,
            _ => return Ok(None),
        },
        Filter::Cmp(l, op, r) => {
            let (Some(l), Some(r)) = (eval(l, input.clone(), root)?, eval(r, input, root)?) else {
                return Ok(None);
            };
            let (l, r) = (scalar(&l, root)?, scalar(&r, root)?);
            V::Bool(match op {
                Cmp::Eq => equal(&l, &r)?,
                Cmp::Ne => !equal(&l, &r)?,
                Cmp::Lt => order(&l, &r)? == Ordering::Less,
                Cmp::Le => order(&l, &r)? != Ordering::Greater,
                Cmp::Gt => order(&l, &r)? == Ordering::Greater,
                Cmp::Ge => order(&l, &r)? != Ordering::Less,
            })
        }
        Filter::Object(members) => {
            let mut object = Vec::with_capacity(members.len());
            for (key, value) in members {
                match eval(value, input.clone(), root)? {
                    Some(value) => object.push((key.as_str(), value)),
                    None => return Ok(None),
                }
            }
            V::Object(object)
        }
    }))
}

/// `.key` of `value`.
fn field<'e, 'p>(value: V<'e, 'p>, key: &str, root: &Root<'e>) -> Result<V<'e, 'p>, Bail> {
    let raw = |members: &[(Cow<'e, str>, &'e RawValue)]| {
        // jaq keeps the last value of a key given twice.
        members
            .iter()
            .rev()
            .find(|(name, _)| name == key)
            .map_or(V::Null, |(_, value)| V::Raw(value.get()))
    };
    match value {
        V::Null | V::Lit(Lit::Null) => Ok(V::Null),
        V::Root => match &root.members {
            Some(members) => Ok(raw(members)),
            None => field(V::Raw(root.text), key, root),
        },
        V::Raw("null") => Ok(V::Null),
        V::Raw(text) if text.starts_with('{') => {
            let members: Members<'e> = serde_json::from_str(text).map_err(|_| Bail)?;
            Ok(raw(&members.0))
        }
        V::Object(members) => Ok(members
            .into_iter()
            .find(|(name, _)| *name == key)
            .map_or(V::Null, |(_, value)| value)),
        // An error in jaq: its message is jaq's to give.
        V::Raw(_) | V::Bool(_) | V::Lit(_) => Err(Bail),
    }
}

/// jq's truth: everything but `null` and `false`.
fn truthy(value: &V<'_, '_>, root: &Root<'_>) -> Result<bool, Bail> {
    Ok(!matches!(
        scalar(value, root)?,
        Scalar::Null | Scalar::Bool(false)
    ))
}

/// A value as far as comparisons need it.
enum Scalar<'a> {
    Null,
    Bool(bool),
    Num(Number),
    Str(Cow<'a, str>),
    Array,
    Object,
}

impl Scalar<'_> {
    /// jq's order of types.
    fn rank(&self) -> u8 {
        match self {
            Scalar::Null => 0,
            Scalar::Bool(_) => 1,
            Scalar::Num(_) => 2,
            Scalar::Str(_) => 3,
            Scalar::Array => 4,
            Scalar::Object => 5,
        }
    }
}

fn scalar<'a>(value: &'a V<'_, '_>, root: &'a Root<'_>) -> Result<Scalar<'a>, Bail> {
    Ok(match value {
        V::Null | V::Lit(Lit::Null) => Scalar::Null,
        V::Bool(b) | V::Lit(Lit::Bool(b)) => Scalar::Bool(*b),
        V::Lit(Lit::Num(n, _)) => Scalar::Num(*n),
        V::Lit(Lit::Str(s)) => Scalar::Str(Cow::Borrowed(s)),
        V::Object(_) => Scalar::Object,
        V::Root => raw_scalar(root.text)?,
        V::Raw(text) => raw_scalar(text)?,
    })
}

/// The scalar of a value of the event (valid JSON text).
fn raw_scalar(text: &str) -> Result<Scalar<'_>, Bail> {
    Ok(match text.as_bytes().first() {
        Some(b'n') => Scalar::Null,
        Some(b't') => Scalar::Bool(true),
        Some(b'f') => Scalar::Bool(false),
        Some(b'[') => Scalar::Array,
        Some(b'{') => Scalar::Object,
        Some(b'"') => match text.contains('\\') {
            false => Scalar::Str(Cow::Borrowed(&text[1..text.len() - 1])),
            true => Scalar::Str(Cow::Owned(serde_json::from_str(text).map_err(|_| Bail)?)),
        },
        _ if text.contains(['.', 'e', 'E']) => {
            Scalar::Num(Number::Float(text.parse().map_err(|_| Bail)?))
        }
        // An integer beyond a machine integer is a big integer in jaq: left to it.
        _ => Scalar::Num(Number::Int(text.parse().map_err(|_| Bail)?)),
    })
}

/// jaq's `==` (jaq-json's `PartialEq` of values and numbers).
fn equal(l: &Scalar<'_>, r: &Scalar<'_>) -> Result<bool, Bail> {
    Ok(match (l, r) {
        (Scalar::Array | Scalar::Object, Scalar::Array | Scalar::Object) => return Err(Bail),
        (Scalar::Num(Number::Int(x)), Scalar::Num(Number::Int(y))) => x == y,
        (Scalar::Num(Number::Int(i)), Scalar::Num(Number::Float(f)))
        | (Scalar::Num(Number::Float(f)), Scalar::Num(Number::Int(i))) => {
            f.is_finite() && float_cmp(*i as f64, *f) == Ordering::Equal
        }
        (Scalar::Num(Number::Float(x)), Scalar::Num(Number::Float(y))) => {
            float_cmp(*x, *y) == Ordering::Equal
        }
        (Scalar::Null, Scalar::Null) => true,
        (Scalar::Bool(x), Scalar::Bool(y)) => x == y,
        (Scalar::Str(x), Scalar::Str(y)) => x == y,
        _ => false,
    })
}

/// jaq's order (jaq-json's `Ord` of values and numbers).
fn order(l: &Scalar<'_>, r: &Scalar<'_>) -> Result<Ordering, Bail> {
    Ok(match (l, r) {
        (Scalar::Array | Scalar::Object, Scalar::Array | Scalar::Object) => return Err(Bail),
        (Scalar::Num(Number::Int(x)), Scalar::Num(Number::Int(y))) => x.cmp(y),
        (Scalar::Num(Number::Int(i)), Scalar::Num(Number::Float(f))) => float_cmp(*i as f64, *f),
        (Scalar::Num(Number::Float(f)), Scalar::Num(Number::Int(i))) => float_cmp(*f, *i as f64),
        (Scalar::Num(Number::Float(x)), Scalar::Num(Number::Float(y))) => float_cmp(*x, *y),
        (Scalar::Bool(x), Scalar::Bool(y)) => x.cmp(y),
        (Scalar::Str(x), Scalar::Str(y)) => x.as_bytes().cmp(y.as_bytes()),
        _ => l.rank().cmp(&r.rank()),
    })
}

/// jaq-json's order of floats: both zeros equal, NaN below everything.
fn float_cmp(left: f64, right: f64) -> Ordering {
    if left == 0. && right == 0. {
        Ordering::Equal
    } else if left.is_nan() {
        Ordering::Less
    } else if right.is_nan() {
        Ordering::Greater
    } else {
        f64::total_cmp(&left, &right)
    }
}

/// Writes `value` as jaq writes it (compact).
fn write(value: &V<'_, '_>, root: &Root<'_>, out: &mut Vec<u8>) -> Result<(), Bail> {
    match value {
        V::Root => canonical(root.text, out)?,
        V::Raw(text) => canonical(text, out)?,
        V::Null | V::Lit(Lit::Null) => out.extend_from_slice(b"null"),
        V::Bool(true) | V::Lit(Lit::Bool(true)) => out.extend_from_slice(b"true"),
        V::Bool(false) | V::Lit(Lit::Bool(false)) => out.extend_from_slice(b"false"),
        V::Lit(Lit::Num(_, text)) => out.extend_from_slice(text.as_bytes()),
        V::Lit(Lit::Str(s)) => {
            write_text(s.as_bytes(), out);
        }
        V::Object(members) => {
            out.push(b'{');
            for (i, (key, value)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_text(key.as_bytes(), out);
                out.push(b':');
                write(value, root, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

mod raw;
#[cfg(test)]
mod tests;
