//! A small scanner of P4_16 sources: just enough of the language to read
//! the declarations the control plane sees.
//!
//! It reads typedefs, constants (`const` and numeric `#define`s), header and
//! struct layouts, and each control's actions, tables, extern instances and
//! the tables its `apply` block applies, with their `@id` and `@name`
//! annotations. It resolves key expressions and parameter types to bit
//! widths and table sizes to numbers. Parser states and statement bodies are
//! skipped. It is no P4 compiler: it trusts the program to compile and only
//! extracts what p4c would put into the P4Info.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// Reads `main` and, in place of each `#include "file"` (quotes, relative to
/// the including file), that file's text, once per file. `#include <...>`
/// (the P4 core and architecture) is left out.
pub fn load(main: &Path) -> std::io::Result<String> {
    let mut out = String::new();
    let mut seen = BTreeSet::new();
    load_into(main, &mut out, &mut seen)?;
    Ok(out)
}

fn load_into(path: &Path, out: &mut String, seen: &mut BTreeSet<PathBuf>) -> std::io::Result<()> {
    let canonical = path.canonicalize()?;
    if !seen.insert(canonical) {
        return Ok(());
    }
    let text = std::fs::read_to_string(path)?;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("#include") {
            let rest = rest.trim();
            if let Some(name) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
                let dir = path.parent().unwrap_or(Path::new("."));
                load_into(&dir.join(name), out, seen)?;
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    Ok(())
}

/// A P4 type, as far as widths go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Type {
    /// `bit<N>` or `int<N>`.
    Bits(u32),
    /// `varbit<N>`: N is the maximum.
    VarBits(u32),
    Bool,
    /// A typedef, header, struct or other named type.
    Named(String),
    /// Anything else (tuples, generics, `error`, ...), as written.
    Other(String),
}

/// A numeric constant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constant {
    /// The declared width, `None` for `int` and `#define`.
    pub width: Option<u32>,
    pub value: u128,
    pub line: usize,
}

/// A header or struct field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub ty: Type,
}

/// `@name(args)`: the annotation name and its argument text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Annotations(pub Vec<(String, Vec<Token>)>);

impl Annotations {
    /// Whether `@name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }

    fn args(&self, name: &str) -> Option<&[Token]> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a.as_slice())
    }

    /// The string argument of `@name("...")`.
    pub fn string(&self, name: &str) -> Option<String> {
        match self.args(name)? {
            [Token {
                kind: TokenKind::Str,
                text,
                ..
            }] => Some(text.clone()),
            _ => None,
        }
    }
}

/// A key field of a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    /// The P4Info match field name: `@name`, else the expression text.
    pub name: String,
    /// The key expression as written, tokens joined.
    pub expr: String,
    pub match_kind: String,
    /// The expression's width, if it could be resolved.
    pub width: Option<u32>,
}

/// A table's reference to an action in its `actions` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionRef {
    /// Full name of the action.
    pub name: String,
    pub default_only: bool,
    pub table_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// Full P4Info name, `Control.table`.
    pub name: String,
    /// The raw `@id` value.
    pub id: Option<u64>,
    pub keys: Vec<Key>,
    pub actions: Vec<ActionRef>,
    /// Full name of the default action.
    pub default_action: Option<String>,
    /// Whether the default action has arguments.
    pub default_action_has_args: bool,
    pub const_default_action: bool,
    /// The `size` expression as written (`IPV4_ROUTE_SIZE`).
    pub size_expr: Option<String>,
    /// The size it evaluates to.
    pub size: Option<u64>,
    /// The direct counter (`counters = x;`), full name.
    pub direct_counter: Option<String>,
    /// Whether the control's `apply` applies it (p4c leaves unapplied
    /// tables out of the P4Info).
    pub applied: bool,
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub width: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    /// Full P4Info name, `Control.action`.
    pub name: String,
    pub id: Option<u64>,
    pub params: Vec<Param>,
    pub line: usize,
}

/// A `counter` or `direct_counter` instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counter {
    /// Full P4Info name, `Control.counter`.
    pub name: String,
    pub id: Option<u64>,
    /// `packets`, `bytes` or `packets_and_bytes`.
    pub unit: Option<String>,
    /// Number of cells (indirect counters only).
    pub size: Option<u64>,
    pub direct: bool,
    pub line: usize,
}

/// What the scanner read from a P4 program.
#[derive(Clone, Debug, Default)]
pub struct Program {
    pub typedefs: BTreeMap<String, Type>,
    pub constants: BTreeMap<String, Constant>,
    /// Headers and structs by type name.
    pub composites: BTreeMap<String, Vec<Field>>,
    /// Every table of every control, in declaration order.
    pub tables: Vec<Table>,
    /// Every action declared in a control, in declaration order.
    pub actions: Vec<Action>,
    /// Every counter and direct counter, in declaration order.
    pub counters: Vec<Counter>,
    /// What the scanner could not resolve (a key or parameter width, a size
    /// or an id it could not evaluate).
    pub problems: Vec<String>,
}

impl Program {
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    pub fn action(&self, name: &str) -> Option<&Action> {
        self.actions.iter().find(|a| a.name == name)
    }

    pub fn counter(&self, name: &str) -> Option<&Counter> {
        self.counters.iter().find(|c| c.name == name)
    }

    /// The value of constant `name`.
    pub fn constant(&self, name: &str) -> Option<u128> {
        self.constants.get(name).map(|c| c.value)
    }

    /// The width of type `ty` with typedefs resolved.
    pub fn width_of(&self, ty: &Type) -> Option<u32> {
        let mut ty = ty;
        for _ in 0..32 {
            match ty {
                Type::Bits(w) | Type::VarBits(w) => return Some(*w),
                Type::Bool => return Some(1),
                Type::Named(n) => ty = self.typedefs.get(n)?,
                Type::Other(_) => return None,
            }
        }
        None
    }

    /// The header or struct fields of `ty`, typedefs resolved.
    fn fields_of(&self, ty: &Type) -> Option<&[Field]> {
        let mut ty = ty;
        for _ in 0..32 {
            match ty {
                Type::Named(n) => match self.typedefs.get(n) {
                    Some(t) => ty = t,
                    None => return self.composites.get(n).map(Vec::as_slice),
                },
                _ => return None,
            }
        }
        None
    }
}

/// Why the scanner gave up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Ident,
    Number,
    Str,
    Punct,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    /// The text; for strings, the contents without quotes.
    pub text: String,
    pub line: usize,
}

impl Token {
    fn is(&self, punct: &str) -> bool {
        self.kind == TokenKind::Punct && self.text == punct
    }

    fn is_ident(&self, word: &str) -> bool {
        self.kind == TokenKind::Ident && self.text == word
    }
}

/// Splits P4 source into tokens; comments and preprocessor lines go,
/// except that `#define NAME <number>` lands in `defines`.
fn tokenize(
    src: &str,
    defines: &mut Vec<(String, String, usize)>,
) -> Result<Vec<Token>, ParseError> {
    let bytes = src.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let mut line_start = true;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\n' {
            line += 1;
            line_start = true;
            i += 1;
            continue;
        }
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'#' && line_start {
            // A preprocessor line, with backslash continuations.
            let start = i;
            while i < bytes.len() && !(bytes[i] == b'\n' && bytes[i - 1] != b'\\') {
                if bytes[i] == b'\n' {
                    line += 1;
                }
                i += 1;
            }
            let directive = &src[start + 1..i];
            let mut words = directive.split_whitespace();
            if words.next() == Some("define") {
                if let (Some(name), Some(value)) = (words.next(), words.next()) {
                    if !name.contains('(') {
                        defines.push((name.to_string(), value.to_string(), line));
                    }
                }
            }
            continue;
        }
        line_start = false;
        if c == b'/' && bytes.get(i + 1) == Some(&b'/') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && bytes.get(i + 1) == Some(&b'*') {
            let start_line = line;
            i += 2;
            loop {
                if i + 1 >= bytes.len() {
                    return Err(ParseError {
                        line: start_line,
                        message: "unterminated comment".into(),
                    });
                }
                if bytes[i] == b'*' && bytes[i + 1] == b'/' {
                    i += 2;
                    break;
                }
                if bytes[i] == b'\n' {
                    line += 1;
                }
                i += 1;
            }
            continue;
        }
        if c == b'"' {
            let mut text = String::new();
            i += 1;
            loop {
                match bytes.get(i) {
                    None => {
                        return Err(ParseError {
                            line,
                            message: "unterminated string".into(),
                        })
                    }
                    Some(b'"') => break,
                    Some(b'\\') => {
                        if let Some(&e) = bytes.get(i + 1) {
                            text.push(e as char);
                        }
                        i += 2;
                    }
                    Some(&b) => {
                        if b == b'\n' {
                            line += 1;
                        }
                        text.push(b as char);
                        i += 1;
                    }
                }
            }
            i += 1;
            tokens.push(Token {
                kind: TokenKind::Str,
                text,
                line,
            });
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            tokens.push(Token {
                kind: TokenKind::Ident,
                text: src[start..i].to_string(),
                line,
            });
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            tokens.push(Token {
                kind: TokenKind::Number,
                text: src[start..i].to_string(),
                line,
            });
            continue;
        }
        tokens.push(Token {
            kind: TokenKind::Punct,
            text: (c as char).to_string(),
            line,
        });
        i += 1;
    }
    Ok(tokens)
}

/// Parses a P4 integer literal: `42`, `0xFF`, `0b101`, `8w0x80`, `4s3`,
/// with `_` separators. Returns (width, value).
pub fn parse_number(text: &str) -> Option<(Option<u32>, u128)> {
    let text = text.replace('_', "");
    let (width, rest) = match text.find(['w', 's']) {
        Some(pos) if !text.starts_with("0x") && !text.starts_with("0X") => {
            (Some(text[..pos].parse().ok()?), &text[pos + 1..])
        }
        _ => (None, text.as_str()),
    };
    let lower = rest.to_ascii_lowercase();
    let value = if let Some(hex) = lower.strip_prefix("0x") {
        u128::from_str_radix(hex, 16).ok()?
    } else if let Some(bin) = lower.strip_prefix("0b") {
        u128::from_str_radix(bin, 2).ok()?
    } else if let Some(oct) = lower.strip_prefix("0o") {
        u128::from_str_radix(oct, 8).ok()?
    } else if let Some(dec) = lower.strip_prefix("0d") {
        dec.parse().ok()?
    } else {
        lower.parse().ok()?
    };
    Some((width, value))
}

/// Parses P4 source text (as [`load`] returns it).
pub fn parse(src: &str) -> Result<Program, ParseError> {
    let mut defines = Vec::new();
    let tokens = tokenize(src, &mut defines)?;
    let mut program = Program::default();
    for (name, value, line) in defines {
        if let Some((width, value)) = parse_number(&value) {
            program
                .constants
                .insert(name, Constant { width, value, line });
        }
    }
    let mut p = Parser {
        tokens: &tokens,
        pos: 0,
        program: &mut program,
    };
    p.top_level()?;
    Ok(program)
}

struct Parser<'a> {
    tokens: &'a [Token],
    pos: usize,
    program: &'a mut Program,
}

/// A table as read, with the names it references still local: its action
/// list (name, @defaultonly, @tableonly), default action and direct counter.
type PendingTable = (
    Table,
    Vec<(String, bool, bool)>,
    Option<String>,
    Option<String>,
);

/// A control's declarations before names and widths are resolved.
struct ControlScope {
    name: String,
    params: Vec<(String, Type)>,
    applied: BTreeSet<String>,
    /// Local name -> full name, for actions and counters.
    local_names: BTreeMap<String, String>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn peek_at(&self, n: usize) -> Option<&Token> {
        self.tokens.get(self.pos + n)
    }

    fn line(&self) -> usize {
        self.peek()
            .or_else(|| self.tokens.last())
            .map_or(0, |t| t.line)
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            line: self.line(),
            message: message.into(),
        })
    }

    fn next(&mut self) -> Result<Token, ParseError> {
        match self.tokens.get(self.pos) {
            Some(t) => {
                self.pos += 1;
                Ok(t.clone())
            }
            None => self.err("unexpected end of input"),
        }
    }

    fn expect(&mut self, punct: &str) -> Result<(), ParseError> {
        let t = self.next()?;
        if t.is(punct) {
            Ok(())
        } else {
            Err(ParseError {
                line: t.line,
                message: format!("expected `{punct}`, found `{}`", t.text),
            })
        }
    }

    fn eat(&mut self, punct: &str) -> bool {
        if self.peek().is_some_and(|t| t.is(punct)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> Result<String, ParseError> {
        let t = self.next()?;
        if t.kind == TokenKind::Ident {
            Ok(t.text)
        } else {
            Err(ParseError {
                line: t.line,
                message: format!("expected a name, found `{}`", t.text),
            })
        }
    }

    /// Skips a balanced group starting at the current opening bracket and
    /// returns the tokens inside it.
    fn group(&mut self) -> Result<Vec<Token>, ParseError> {
        let open = self.next()?;
        let close = match open.text.as_str() {
            "(" => ")",
            "{" => "}",
            "[" => "]",
            "<" => ">",
            _ => {
                return Err(ParseError {
                    line: open.line,
                    message: format!("expected a bracket, found `{}`", open.text),
                })
            }
        };
        let start = self.pos;
        let mut depth = 1;
        while depth > 0 {
            let t = self.next()?;
            if t.kind == TokenKind::Punct {
                if t.text == open.text {
                    depth += 1;
                } else if t.text == close {
                    depth -= 1;
                }
            }
        }
        Ok(self.tokens[start..self.pos - 1].to_vec())
    }

    /// Skips to just after the next `;` outside brackets.
    fn skip_statement(&mut self) -> Result<(), ParseError> {
        loop {
            let t = self.peek().ok_or_else(|| ParseError {
                line: self.line(),
                message: "unexpected end of input".into(),
            })?;
            if t.kind == TokenKind::Punct {
                match t.text.as_str() {
                    ";" => {
                        self.pos += 1;
                        return Ok(());
                    }
                    "(" | "{" | "[" => {
                        self.group()?;
                        continue;
                    }
                    _ => {}
                }
            }
            self.pos += 1;
        }
    }

    fn annotations(&mut self) -> Result<Annotations, ParseError> {
        let mut out = Vec::new();
        while self.eat("@") {
            let name = self.ident()?;
            let args = if self.peek().is_some_and(|t| t.is("(") || t.is("[")) {
                self.group()?
            } else {
                Vec::new()
            };
            out.push((name, args));
        }
        Ok(Annotations(out))
    }

    fn parse_type(&mut self) -> Result<Type, ParseError> {
        let t = self.next()?;
        if t.kind != TokenKind::Ident {
            return Err(ParseError {
                line: t.line,
                message: format!("expected a type, found `{}`", t.text),
            });
        }
        match t.text.as_str() {
            "bit" | "int" | "varbit" => {
                if !self.peek().is_some_and(|n| n.is("<")) {
                    return Ok(if t.text == "bit" {
                        Type::Bits(1)
                    } else {
                        Type::Other(t.text)
                    });
                }
                let inner = self.group()?;
                let width = self.eval(&inner).map(|v| v as u32);
                match width {
                    Some(w) if t.text == "varbit" => Ok(Type::VarBits(w)),
                    Some(w) => Ok(Type::Bits(w)),
                    None => Ok(Type::Other(format!("{}<{}>", t.text, join(&inner)))),
                }
            }
            "bool" => Ok(Type::Bool),
            _ => {
                if self.peek().is_some_and(|n| n.is("<")) {
                    let inner = self.group()?;
                    return Ok(Type::Other(format!("{}<{}>", t.text, join(&inner))));
                }
                Ok(Type::Named(t.text))
            }
        }
    }

    /// Evaluates a constant integer expression: literals, constant names,
    /// casts, parentheses, and `+ - * | & << >>` left to right (enough for
    /// sizes and widths).
    fn eval(&self, tokens: &[Token]) -> Option<u128> {
        eval_tokens(self.program, tokens)
    }

    fn top_level(&mut self) -> Result<(), ParseError> {
        while self.peek().is_some() {
            let annotations = self.annotations()?;
            let Some(t) = self.peek() else { break };
            let line = t.line;
            match t.text.as_str() {
                "typedef" | "type" => {
                    self.pos += 1;
                    let ty = self.parse_type()?;
                    let name = self.ident()?;
                    self.expect(";")?;
                    self.program.typedefs.insert(name, ty);
                }
                "const" => {
                    self.pos += 1;
                    let ty = self.parse_type()?;
                    let name = self.ident()?;
                    self.expect("=")?;
                    let start = self.pos;
                    self.skip_statement()?;
                    let expr = &self.tokens[start..self.pos - 1];
                    match self.eval(expr) {
                        Some(value) => {
                            let width = match ty {
                                Type::Bits(w) => Some(w),
                                _ => self.program.width_of(&ty),
                            };
                            self.program
                                .constants
                                .insert(name, Constant { width, value, line });
                        }
                        None => self.program.problems.push(format!(
                            "line {line}: cannot evaluate constant {name} = {}",
                            join(expr)
                        )),
                    }
                }
                "header" | "struct" | "header_union" => {
                    self.pos += 1;
                    let name = self.ident()?;
                    let fields = self.fields()?;
                    self.program.composites.insert(name, fields);
                }
                "control" => {
                    self.pos += 1;
                    self.control()?;
                }
                "parser" | "error" | "enum" | "match_kind" | "extern" | "package" => {
                    // Declarations without a control-plane face: skip to the
                    // end of their body or of the statement.
                    self.pos += 1;
                    while let Some(t) = self.peek() {
                        if t.is("{") {
                            self.group()?;
                            break;
                        }
                        if t.is(";") {
                            self.pos += 1;
                            break;
                        }
                        if t.is("(") || t.is("<") {
                            self.group()?;
                            continue;
                        }
                        self.pos += 1;
                    }
                }
                "action" => {
                    // A top-level action: P4Info names it without a control.
                    self.pos += 1;
                    let scope = ControlScope {
                        name: String::new(),
                        params: Vec::new(),
                        applied: BTreeSet::new(),
                        local_names: BTreeMap::new(),
                    };
                    let (_, action) = self.action(&scope, &annotations, line)?;
                    self.program.actions.push(action);
                }
                _ => {
                    // The package instantiation (`V1Switch(...) main;`), or
                    // anything else we need not understand.
                    self.skip_statement()?;
                }
            }
        }
        Ok(())
    }

    fn fields(&mut self) -> Result<Vec<Field>, ParseError> {
        self.expect("{")?;
        let mut fields = Vec::new();
        while !self.eat("}") {
            self.annotations()?;
            let ty = self.parse_type()?;
            let name = self.ident()?;
            self.expect(";")?;
            fields.push(Field { name, ty });
        }
        Ok(fields)
    }

    fn params(&mut self) -> Result<Vec<(String, Type)>, ParseError> {
        self.expect("(")?;
        let mut params = Vec::new();
        if self.eat(")") {
            return Ok(params);
        }
        loop {
            self.annotations()?;
            if self
                .peek()
                .is_some_and(|t| ["in", "out", "inout"].iter().any(|d| t.is_ident(d)))
            {
                self.pos += 1;
            }
            let ty = self.parse_type()?;
            let name = self.ident()?;
            if self.eat("=") {
                // A default value: skip to the next `,` or `)`.
                while !self.peek().is_some_and(|t| t.is(",") || t.is(")")) {
                    if self.peek().is_some_and(|t| t.is("(")) {
                        self.group()?;
                    } else {
                        self.next()?;
                    }
                }
            }
            params.push((name, ty));
            if self.eat(")") {
                return Ok(params);
            }
            self.expect(",")?;
        }
    }

    /// The full control-plane name of local `decl` in control `control`.
    fn full_name(control: &str, decl: &str, annotations: &Annotations) -> String {
        match annotations.string("name") {
            Some(n) if n.starts_with('.') => n[1..].to_string(),
            Some(n) if control.is_empty() => n,
            Some(n) => format!("{control}.{n}"),
            None if control.is_empty() => decl.to_string(),
            None => format!("{control}.{decl}"),
        }
    }

    fn id(&mut self, annotations: &Annotations, what: &str, line: usize) -> Option<u64> {
        let args = annotations.args("id")?;
        match self.eval(args) {
            Some(v) => Some(v as u64),
            None => {
                self.program
                    .problems
                    .push(format!("line {line}: cannot evaluate @id of {what}"));
                None
            }
        }
    }

    fn control(&mut self) -> Result<(), ParseError> {
        let name = self.ident()?;
        if self.peek().is_some_and(|t| t.is("<")) {
            self.group()?;
        }
        let params = self.params()?;
        let mut scope = ControlScope {
            name,
            params,
            applied: BTreeSet::new(),
            local_names: BTreeMap::new(),
        };
        // Tables reference actions and counters by local name; resolve
        // after the whole control is read.
        let mut pending: Vec<PendingTable> = Vec::new();
        self.expect("{")?;
        while !self.eat("}") {
            let annotations = self.annotations()?;
            let t = self.peek().cloned().ok_or_else(|| ParseError {
                line: self.line(),
                message: "unterminated control".into(),
            })?;
            match t.text.as_str() {
                "action" if t.kind == TokenKind::Ident => {
                    self.pos += 1;
                    let (local, action) = self.action(&scope, &annotations, t.line)?;
                    scope.local_names.insert(local, action.name.clone());
                    self.program.actions.push(action);
                }
                "table" if t.kind == TokenKind::Ident => {
                    self.pos += 1;
                    pending.push(self.table(&scope, &annotations, t.line)?);
                }
                "apply" if t.kind == TokenKind::Ident => {
                    self.pos += 1;
                    let body = self.group()?;
                    for w in body.windows(4) {
                        if w[0].kind == TokenKind::Ident
                            && w[1].is(".")
                            && w[2].is_ident("apply")
                            && w[3].is("(")
                        {
                            scope.applied.insert(w[0].text.clone());
                        }
                    }
                }
                _ if t.kind == TokenKind::Ident => {
                    // An instantiation `Type(args) name;` or
                    // `Type<T>(args) name;`, or a variable or constant.
                    let is_instance = self.peek_at(1).is_some_and(|n| n.is("(") || n.is("<"));
                    if is_instance {
                        self.instance(&mut scope, &annotations, t.line)?;
                    } else {
                        self.skip_statement()?;
                    }
                }
                _ => self.skip_statement()?,
            }
        }
        for (mut table, actions, default_action, counter) in pending {
            let local = table
                .name
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .to_string();
            table.applied = scope.applied.contains(&local);
            table.actions = actions
                .into_iter()
                .map(|(a, default_only, table_only)| ActionRef {
                    name: resolve_local(&scope, &a),
                    default_only,
                    table_only,
                })
                .collect();
            table.default_action = default_action.map(|a| resolve_local(&scope, &a));
            table.direct_counter = counter.map(|c| resolve_local(&scope, &c));
            self.program.tables.push(table);
        }
        Ok(())
    }

    fn action(
        &mut self,
        scope: &ControlScope,
        annotations: &Annotations,
        line: usize,
    ) -> Result<(String, Action), ParseError> {
        let local = self.ident()?;
        let name = Self::full_name(&scope.name, &local, annotations);
        let params = self.params()?;
        self.group()?; // body
        let id = self.id(annotations, &format!("action {name}"), line);
        let params = params
            .into_iter()
            .map(|(pname, ty)| {
                let width = self.program.width_of(&ty);
                if width.is_none() {
                    self.program.problems.push(format!(
                        "line {line}: cannot resolve the width of parameter {pname} of {name}: {ty:?}"
                    ));
                }
                Param { name: pname, width }
            })
            .collect();
        Ok((
            local,
            Action {
                name,
                id,
                params,
                line,
            },
        ))
    }

    fn table(
        &mut self,
        scope: &ControlScope,
        annotations: &Annotations,
        line: usize,
    ) -> Result<PendingTable, ParseError> {
        let local = self.ident()?;
        let name = Self::full_name(&scope.name, &local, annotations);
        let id = self.id(annotations, &format!("table {name}"), line);
        let mut table = Table {
            name: name.clone(),
            id,
            keys: Vec::new(),
            actions: Vec::new(),
            default_action: None,
            default_action_has_args: false,
            const_default_action: false,
            size_expr: None,
            size: None,
            direct_counter: None,
            applied: false,
            line,
        };
        let mut actions = Vec::new();
        let mut default_action = None;
        let mut counter = None;
        self.expect("{")?;
        while !self.eat("}") {
            self.annotations()?;
            let is_const = self.peek().is_some_and(|t| t.is_ident("const"));
            if is_const {
                self.pos += 1;
            }
            let prop = self.ident()?;
            self.expect("=")?;
            match prop.as_str() {
                "key" => {
                    self.expect("{")?;
                    while !self.eat("}") {
                        let key = self.key(scope, &name)?;
                        table.keys.push(key);
                    }
                }
                "actions" => {
                    self.expect("{")?;
                    while !self.eat("}") {
                        let refs = self.annotations()?;
                        let action = self.ident()?;
                        if self.peek().is_some_and(|t| t.is("(")) {
                            self.group()?;
                        }
                        self.expect(";")?;
                        actions.push((action, refs.has("defaultonly"), refs.has("tableonly")));
                    }
                }
                "default_action" => {
                    default_action = Some(self.ident()?);
                    if self.peek().is_some_and(|t| t.is("(")) {
                        table.default_action_has_args = !self.group()?.is_empty();
                    }
                    self.expect(";")?;
                    table.const_default_action = is_const;
                }
                "size" => {
                    let start = self.pos;
                    self.skip_statement()?;
                    let expr = &self.tokens[start..self.pos - 1];
                    table.size_expr = Some(join(expr));
                    table.size = self.eval(expr).map(|v| v as u64);
                    if table.size.is_none() {
                        self.program.problems.push(format!(
                            "line {line}: cannot evaluate the size of {name}: {}",
                            join(expr)
                        ));
                    }
                }
                "counters" => {
                    counter = Some(self.ident()?);
                    self.expect(";")?;
                }
                _ => {
                    if self.peek().is_some_and(|t| t.is("{")) {
                        self.group()?;
                        self.eat(";");
                    } else {
                        self.skip_statement()?;
                    }
                }
            }
        }
        Ok((table, actions, default_action, counter))
    }

    /// One `expr : match_kind @annotations;` of a table key.
    fn key(&mut self, scope: &ControlScope, table: &str) -> Result<Key, ParseError> {
        let start = self.pos;
        let mut depth = 0i32;
        loop {
            let t = self.peek().ok_or_else(|| ParseError {
                line: self.line(),
                message: "unterminated key".into(),
            })?;
            if t.kind == TokenKind::Punct {
                match t.text.as_str() {
                    "(" | "[" => depth += 1,
                    ")" | "]" => depth -= 1,
                    ":" if depth == 0 => break,
                    _ => {}
                }
            }
            self.pos += 1;
        }
        let expr_tokens = &self.tokens[start..self.pos];
        self.expect(":")?;
        let match_kind = self.ident()?;
        let annotations = self.annotations()?;
        self.expect(";")?;
        let expr = join(expr_tokens);
        let width = key_width(self.program, scope, expr_tokens);
        if width.is_none() {
            self.program.problems.push(format!(
                "line {}: cannot resolve the width of key `{expr}` of {table}",
                expr_tokens.first().map_or(0, |t| t.line)
            ));
        }
        Ok(Key {
            name: annotations.string("name").unwrap_or_else(|| expr.clone()),
            expr,
            match_kind,
            width,
        })
    }

    fn instance(
        &mut self,
        scope: &mut ControlScope,
        annotations: &Annotations,
        line: usize,
    ) -> Result<(), ParseError> {
        let start = self.pos;
        let ty = self.ident()?;
        if self.peek().is_some_and(|t| t.is("<")) {
            self.group()?;
        }
        if !self.peek().is_some_and(|t| t.is("(")) {
            // A variable of a generic type, not an instance.
            self.pos = start;
            return self.skip_statement();
        }
        let args = self.group()?;
        let local = self.ident()?;
        self.expect(";")?;
        let direct = match ty.as_str() {
            "counter" => false,
            "direct_counter" => true,
            _ => return Ok(()),
        };
        let name = Self::full_name(&scope.name, &local, annotations);
        scope.local_names.insert(local, name.clone());
        let id = self.id(annotations, &format!("counter {name}"), line);
        let parts = split_args(&args);
        let unit = parts.iter().find_map(|a| match a.as_slice() {
            [t, dot, u] if t.is_ident("CounterType") && dot.is(".") => Some(u.text.clone()),
            _ => None,
        });
        let size = if direct {
            None
        } else {
            let size = parts.first().and_then(|a| self.eval(a)).map(|v| v as u64);
            if size.is_none() {
                self.program
                    .problems
                    .push(format!("line {line}: cannot evaluate the size of {name}"));
            }
            size
        };
        self.program.counters.push(Counter {
            name,
            id,
            unit,
            size,
            direct,
            line,
        });
        Ok(())
    }
}

fn resolve_local(scope: &ControlScope, local: &str) -> String {
    scope
        .local_names
        .get(local)
        .cloned()
        .unwrap_or_else(|| local.to_string())
}

/// Splits argument tokens at top-level commas.
fn split_args(tokens: &[Token]) -> Vec<Vec<Token>> {
    let mut out = vec![Vec::new()];
    let mut depth = 0i32;
    for t in tokens {
        if t.kind == TokenKind::Punct {
            match t.text.as_str() {
                "(" | "[" | "{" => depth += 1,
                ")" | "]" | "}" => depth -= 1,
                "," if depth == 0 => {
                    out.push(Vec::new());
                    continue;
                }
                _ => {}
            }
        }
        out.last_mut().expect("never empty").push(t.clone());
    }
    if out.len() == 1 && out[0].is_empty() {
        out.clear();
    }
    out
}

fn join(tokens: &[Token]) -> String {
    let mut s = String::new();
    let mut prev_word = false;
    for t in tokens {
        let word = t.kind != TokenKind::Punct;
        if word && prev_word {
            s.push(' ');
        }
        if t.kind == TokenKind::Str {
            s.push('"');
            s.push_str(&t.text);
            s.push('"');
        } else {
            s.push_str(&t.text);
        }
        prev_word = word;
    }
    s
}

/// The standard_metadata_t fields a key might use (v1model.p4).
fn standard_metadata_width(field: &str) -> Option<u32> {
    Some(match field {
        "ingress_port" | "egress_spec" | "egress_port" => 9,
        "instance_type" | "packet_length" | "enq_timestamp" | "deq_timedelta" => 32,
        "mcast_grp" | "egress_rid" => 16,
        "enq_qdepth" | "deq_qdepth" => 19,
        "ingress_global_timestamp" | "egress_global_timestamp" => 48,
        "checksum_error" => 1,
        _ => return None,
    })
}

/// The width of a key expression: a field path (`hdr.ipv4.dst_addr`,
/// `meta.bucket`), optionally sliced (`x[7:0]`) or cast (`(bit<8>) x`).
fn key_width(program: &Program, scope: &ControlScope, tokens: &[Token]) -> Option<u32> {
    match tokens {
        // A cast: `(bit<N>) expr` or `(typedef_t) expr`.
        [open, rest @ ..] if open.is("(") => {
            let close = rest.iter().position(|t| t.is(")"))?;
            let ty = &rest[..close];
            match ty {
                [b, lt, n, gt]
                    if (b.is_ident("bit") || b.is_ident("int")) && lt.is("<") && gt.is(">") =>
                {
                    eval_tokens(program, std::slice::from_ref(n)).map(|v| v as u32)
                }
                [name] if name.kind == TokenKind::Ident => {
                    program.width_of(&Type::Named(name.text.clone()))
                }
                _ => None,
            }
        }
        _ => {
            // A slice at the end.
            if let [path @ .., open, hi, colon, lo, close] = tokens {
                if open.is("[") && colon.is(":") && close.is("]") {
                    let hi = eval_tokens(program, std::slice::from_ref(hi))?;
                    let lo = eval_tokens(program, std::slice::from_ref(lo))?;
                    path_width(program, scope, path)?;
                    return Some((hi - lo + 1) as u32);
                }
            }
            path_width(program, scope, tokens)
        }
    }
}

fn path_width(program: &Program, scope: &ControlScope, tokens: &[Token]) -> Option<u32> {
    let mut names = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if i % 2 == 0 {
            if t.kind != TokenKind::Ident {
                return None;
            }
            names.push(t.text.as_str());
        } else if !t.is(".") {
            return None;
        }
    }
    let (first, rest) = names.split_first()?;
    let ty = &scope.params.iter().find(|(n, _)| n == first)?.1;
    if matches!(ty, Type::Named(n) if n == "standard_metadata_t") {
        return match rest {
            [field] => standard_metadata_width(field),
            _ => None,
        };
    }
    let mut ty = ty.clone();
    for field in rest {
        let fields = program.fields_of(&ty)?;
        ty = fields.iter().find(|f| f.name == *field)?.ty.clone();
    }
    program.width_of(&ty)
}

/// See [`Parser::eval`].
fn eval_tokens(program: &Program, tokens: &[Token]) -> Option<u128> {
    let mut pos = 0;
    let value = eval_binary(program, tokens, &mut pos)?;
    (pos == tokens.len()).then_some(value)
}

fn eval_binary(program: &Program, tokens: &[Token], pos: &mut usize) -> Option<u128> {
    let mut acc = eval_unary(program, tokens, pos)?;
    while let Some(t) = tokens.get(*pos) {
        if t.kind != TokenKind::Punct {
            return None;
        }
        let two = tokens.get(*pos + 1).is_some_and(|n| n.text == t.text);
        let op = match (t.text.as_str(), two) {
            ("<", true) => "<<",
            (">", true) => ">>",
            ("+", true) => "++",
            ("+" | "-" | "*" | "|" | "&", false) => t.text.as_str(),
            _ => return None,
        };
        *pos += if op.len() == 2 { 2 } else { 1 };
        let rhs = eval_unary(program, tokens, pos)?;
        acc = match op {
            "+" => acc.checked_add(rhs)?,
            "-" => acc.checked_sub(rhs)?,
            "*" => acc.checked_mul(rhs)?,
            "|" => acc | rhs,
            "&" => acc & rhs,
            "<<" => acc.checked_shl(u32::try_from(rhs).ok()?)?,
            ">>" => acc.checked_shr(u32::try_from(rhs).ok()?)?,
            // Concatenation needs the right operand's width: only constants
            // and sized literals have one.
            "++" => {
                let width = match &tokens[*pos - 1] {
                    t if t.kind == TokenKind::Ident => program.constants.get(&t.text)?.width?,
                    t if t.kind == TokenKind::Number => parse_number(&t.text)?.0?,
                    _ => return None,
                };
                (acc << width) | rhs
            }
            _ => return None,
        };
    }
    Some(acc)
}

fn eval_unary(program: &Program, tokens: &[Token], pos: &mut usize) -> Option<u128> {
    let t = tokens.get(*pos)?;
    match t.kind {
        TokenKind::Number => {
            *pos += 1;
            parse_number(&t.text).map(|(_, v)| v)
        }
        TokenKind::Ident => {
            *pos += 1;
            program.constants.get(&t.text).map(|c| c.value)
        }
        TokenKind::Punct if t.text == "(" => {
            // A cast `(bit<N>)`/`(name)` or a parenthesised expression.
            let mut depth = 0;
            let mut end = *pos;
            for (i, t) in tokens.iter().enumerate().skip(*pos) {
                if t.is("(") {
                    depth += 1;
                } else if t.is(")") {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
            }
            let inner = &tokens[*pos + 1..end];
            *pos = end + 1;
            let is_cast = match inner {
                [b, lt, _, gt] => {
                    (b.is_ident("bit") || b.is_ident("int")) && lt.is("<") && gt.is(">")
                }
                [name] => {
                    name.kind == TokenKind::Ident && program.typedefs.contains_key(&name.text)
                }
                _ => false,
            };
            if is_cast {
                let width = match inner {
                    [_, _, n, _] => eval_tokens(program, std::slice::from_ref(n))? as u32,
                    _ => program.width_of(&Type::Named(inner[0].text.clone()))?,
                };
                let v = eval_unary(program, tokens, pos)?;
                Some(if width >= 128 {
                    v
                } else {
                    v & ((1u128 << width) - 1)
                })
            } else {
                eval_tokens(program, inner)
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
#define BIG 7
typedef bit<32> addr_t;
typedef addr_t  alias_t;
const bit<16> SMALL = 0x10;
const bit<32> SIZE = SMALL * 4;   // 64
header h_t { bit<4> a; alias_t b; varbit<32> opts; }
struct hs_t { h_t h; }
struct m_t { bit<12> vrf; }
/* a comment with table fake { } */
control C(inout hs_t hdr, inout m_t meta, inout standard_metadata_t sm) {
    @id(0x12000005) counter(SIZE, CounterType.packets) cnt;
    @id(0x13000001) direct_counter(CounterType.packets_and_bytes) dc;
    bit<8> tmp;
    @id(3) action set(addr_t x, bit<9> port) { sm.egress_spec = port; }
    @name(".global_nop") action nop() { }
    @id(0x02000009)
    table t {
        key = {
            hdr.h.b     : lpm @name("dst");
            meta.vrf    : exact;
            hdr.h.b[7:0]: exact @name("low");
            sm.ingress_port : exact @name("in_port");
        }
        actions = { set; @defaultonly nop; }
        const default_action = nop();
        counters = dc;
        size = SIZE;
    }
    table unused { actions = { nop; } default_action = nop; size = BIG; }
    apply { if (hdr.h.isValid()) { t.apply(); } }
}
V1Switch(P(), C()) main;
"#;

    #[test]
    fn reads_declarations() {
        let p = parse(SAMPLE).unwrap();
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(p.constant("SIZE"), Some(64));
        assert_eq!(p.constant("BIG"), Some(7));
        assert_eq!(p.constants["SMALL"].width, Some(16));

        let t = p.table("C.t").unwrap();
        assert_eq!(t.id, Some(0x0200_0009));
        assert!(t.applied);
        assert_eq!(t.size, Some(64));
        assert_eq!(t.size_expr.as_deref(), Some("SIZE"));
        assert!(t.const_default_action);
        assert_eq!(t.default_action.as_deref(), Some("global_nop"));
        assert_eq!(t.direct_counter.as_deref(), Some("C.dc"));
        let keys: Vec<_> = t
            .keys
            .iter()
            .map(|k| (k.name.as_str(), k.width, k.match_kind.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("dst", Some(32), "lpm"),
                ("meta.vrf", Some(12), "exact"),
                ("low", Some(8), "exact"),
                ("in_port", Some(9), "exact"),
            ]
        );
        assert_eq!(t.actions[0].name, "C.set");
        assert!(!t.actions[0].default_only);
        assert_eq!(t.actions[1].name, "global_nop");
        assert!(t.actions[1].default_only);

        let u = p.table("C.unused").unwrap();
        assert!(!u.applied);
        assert_eq!(u.size, Some(7));

        let set = p.action("C.set").unwrap();
        assert_eq!(set.id, Some(3));
        let params: Vec<_> = set
            .params
            .iter()
            .map(|p| (p.name.as_str(), p.width))
            .collect();
        assert_eq!(params, [("x", Some(32)), ("port", Some(9))]);

        let cnt = p.counter("C.cnt").unwrap();
        assert_eq!(
            (cnt.id, cnt.size, cnt.direct),
            (Some(0x1200_0005), Some(64), false)
        );
        assert_eq!(cnt.unit.as_deref(), Some("packets"));
        let dc = p.counter("C.dc").unwrap();
        assert!(dc.direct);
        assert_eq!(dc.unit.as_deref(), Some("packets_and_bytes"));
        assert!(p.table("C.fake").is_none());
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("8w0x80"), Some((Some(8), 0x80)));
        assert_eq!(parse_number("0xFF7A"), Some((None, 0xff7a)));
        assert_eq!(parse_number("4294967296"), Some((None, 1 << 32)));
        assert_eq!(parse_number("0b1010"), Some((None, 10)));
        assert_eq!(parse_number("1_000"), Some((None, 1000)));
        assert_eq!(parse_number("zz"), None);
    }

    #[test]
    fn constant_expressions() {
        let p = parse(
            "const bit<16> A = 0xFF7A; const bit<8> B = 0xA1; const bit<24> C = A ++ B;\n\
             const bit<32> D = (bit<32>)(A - 1) << 1;",
        )
        .unwrap();
        assert_eq!(p.constant("C"), Some(0xFF7AA1));
        assert_eq!(p.constant("D"), Some(0xFF79 << 1));
    }

    #[test]
    fn unresolvable_widths_are_problems() {
        let p = parse(
            "struct m_t { bit<8> a; }\n\
             control C(inout m_t meta) { action a(mystery_t x) {} \n\
             table t { key = { meta.nope : exact; } actions = { a; } default_action = a(0); size = NOPE; }\n\
             apply { t.apply(); } }",
        )
        .unwrap();
        assert_eq!(p.problems.len(), 3, "{:?}", p.problems);
        assert!(p.table("C.t").unwrap().default_action_has_args);
    }
}
