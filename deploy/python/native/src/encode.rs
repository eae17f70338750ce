//! Reads `record(...)`'s arguments straight into the protobuf bytes of an `InferenceRecord`
//! (proto/inferscope/v1/ingest.proto), as the pure-Python client's `_fill_record`
//! (deploy/python/inferscope_client/client.py) fills the message.
//!
//! Written by hand because prost encodes only its generated structs: going through
//! `pb::InferenceRecord` meant a `Vec<f64>` and a `String` or two allocated per record on the
//! caller's thread, freed on the sender's, and a second pass (`encoded_len`, then `encode_raw`,
//! which copies each packed double's 8 bytes through a call of its own) on the sender's thread:
//! about half of the client's instructions per record (BENCHMARKS.md, *Python client
//! (issue 15)*). Here each
//! value is read from its Python object and written once, into a reused buffer, in field-number
//! order with prost's wire rules (proto3: an empty string, a zero number and an empty repeated
//! field are left out; `optional` and oneof fields are written whenever set; repeated doubles
//! packed). Keys and varints come from prost's own `encoding` helpers. The tests in
//! deploy/python/tests/test_client.py decode what this writes and compare it, record by record,
//! with the message the pure-Python client builds from the same arguments.
//!
//! Lists and tuples of floats are read through the C API (`PyList_GET_ITEM`,
//! `PyFloat_AS_DOUBLE`) without touching reference counts when every item is an exact `float`;
//! any other item (None, int, a numpy scalar, anything `float()` accepts) goes through `float()`
//! itself. The stable ABI (`--features abi3`) has neither macro and reads them through PyO3.

use crate::pb;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use pyo3::{
    exceptions::{PyTypeError, PyValueError},
    ffi,
    prelude::*,
    types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple},
};
use std::time::{SystemTime, UNIX_EPOCH};

/// The arguments of `record`, as given (`None` when not passed).
pub struct RecordArgs<'a, 'py> {
    pub request_id: Option<&'a Bound<'py, PyAny>>,
    pub latency_seconds: Option<&'a Bound<'py, PyAny>>,
    pub error_type: Option<&'a Bound<'py, PyAny>>,
    pub model: Option<&'a Bound<'py, PyAny>>,
    pub version: Option<&'a Bound<'py, PyAny>>,
    pub time_unix_nano: Option<&'a Bound<'py, PyAny>>,
    pub numeric_features: Option<&'a Bound<'py, PyAny>>,
    pub categorical_features: Option<&'a Bound<'py, PyAny>>,
    pub features: Option<&'a Bound<'py, PyAny>>,
    pub predicted_class: Option<&'a Bound<'py, PyAny>>,
    pub class_probabilities: Option<&'a Bound<'py, PyAny>>,
    pub score: Option<&'a Bound<'py, PyAny>>,
    pub regression_value: Option<&'a Bound<'py, PyAny>>,
    pub input_tokens: Option<&'a Bound<'py, PyAny>>,
    pub output_tokens: Option<&'a Bound<'py, PyAny>>,
    pub time_to_first_token_seconds: Option<&'a Bound<'py, PyAny>>,
    pub finish_reason: Option<&'a Bound<'py, PyAny>>,
    pub operation: Option<&'a Bound<'py, PyAny>>,
    pub response_model: Option<&'a Bound<'py, PyAny>>,
    pub label: Option<&'a Bound<'py, PyAny>>,
    pub traceparent: Option<&'a Bound<'py, PyAny>>,
    pub tracestate: Option<&'a Bound<'py, PyAny>>,
    pub attributes: Option<&'a Bound<'py, PyAny>>,
}

/// `None` for an absent or None argument (`x is not None`).
fn given<'a, 'py>(arg: Option<&'a Bound<'py, PyAny>>) -> Option<&'a Bound<'py, PyAny>> {
    arg.filter(|a| !a.is_none())
}

/// `if x:` for an argument (absent and None are false).
fn truthy(arg: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
    match given(arg) {
        None => Ok(false),
        Some(a) => match a.cast_exact::<PyString>() {
            Ok(s) => Ok(s.len()? > 0),
            Err(_) => a.is_truthy(),
        },
    }
}

/// A length-delimited field whose length is written once its contents are: the key, then
/// room for a varint of `hint`'s size ([`close`] moves the contents when the length needs
/// another size).
struct Open {
    at: usize,
    room: usize,
}

fn open(out: &mut Vec<u8>, tag: u32, hint: usize) -> Open {
    encode_key(tag, WireType::LengthDelimited, out);
    let room = encoded_len_varint(hint as u64);
    let at = out.len();
    out.resize(at + room, 0);
    Open { at, room }
}

/// Writes the field's length; returns it.
fn close(out: &mut Vec<u8>, field: Open) -> usize {
    let start = field.at + field.room;
    let len = out.len() - start;
    let needed = encoded_len_varint(len as u64);
    if needed != field.room {
        let end = out.len();
        if needed > field.room {
            out.resize(end + needed - field.room, 0);
        }
        out.copy_within(start..end, field.at + needed);
        out.truncate(field.at + needed + len);
    }
    let mut varint = [0u8; 10];
    let mut slice = &mut varint[..];
    encode_varint(len as u64, &mut slice);
    out[field.at..field.at + needed].copy_from_slice(&varint[..needed]);
    len
}

fn put_bytes(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn put_double(out: &mut Vec<u8>, tag: u32, value: f64) {
    encode_key(tag, WireType::SixtyFourBit, out);
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_varint(out: &mut Vec<u8>, tag: u32, value: u64) {
    encode_key(tag, WireType::Varint, out);
    encode_varint(value, out);
}

/// A string field from a `str` (not left out when empty: for repeated and oneof fields).
fn put_str(out: &mut Vec<u8>, tag: u32, s: &Bound<'_, PyString>) -> PyResult<()> {
    put_bytes(out, tag, s.to_cow()?.as_bytes());
    Ok(())
}

/// A string field left out when empty (a scalar proto3 field).
fn put_nonempty(out: &mut Vec<u8>, tag: u32, s: &Bound<'_, PyString>) -> PyResult<()> {
    let s = s.to_cow()?;
    if !s.is_empty() {
        put_bytes(out, tag, s.as_bytes());
    }
    Ok(())
}

/// `str(value)`.
fn str_of<'py>(a: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyString>> {
    match a.cast_exact::<PyString>() {
        Ok(s) => Ok(s.clone()),
        Err(_) => a.str(),
    }
}

/// `if x: rec.field = str(x)`.
fn put_text(out: &mut Vec<u8>, tag: u32, arg: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
    if truthy(arg)? {
        put_nonempty(out, tag, &str_of(arg.unwrap())?)?;
    }
    Ok(())
}

/// `if x: rec.field = x` for a field that takes a `str` only (model, version, traceparent...).
fn put_string(
    out: &mut Vec<u8>,
    tag: u32,
    arg: Option<&Bound<'_, PyAny>>,
    name: &str,
) -> PyResult<()> {
    if !truthy(arg)? {
        return Ok(());
    }
    let a = arg.unwrap();
    match a.cast::<PyString>() {
        Ok(s) => put_str(out, tag, s),
        Err(_) => Err(PyTypeError::new_err(format!(
            "{name} must be str, not {}",
            a.get_type().name()?
        ))),
    }
}

/// `float(value)`: an exact float as it is, anything else through `float()` itself.
pub fn float(a: &Bound<'_, PyAny>) -> PyResult<f64> {
    if let Ok(f) = a.cast_exact::<PyFloat>() {
        return Ok(f.value());
    }
    // SAFETY: PyNumber_Float is `float(a)`, returning a new reference or NULL with an error set.
    let f = unsafe { Bound::from_owned_ptr_or_err(a.py(), ffi::PyNumber_Float(a.as_ptr()))? };
    Ok(f.cast_into::<PyFloat>()?.value())
}

/// `int(value)`, then as a u64.
pub fn int(a: &Bound<'_, PyAny>) -> PyResult<u64> {
    match a.extract::<u64>() {
        Ok(v) => Ok(v),
        Err(_) => a.py().get_type::<PyInt>().call1((a,))?.extract(),
    }
}

/// `int(value)`, then as a u32 (class indices).
pub fn int32(a: &Bound<'_, PyAny>) -> PyResult<u32> {
    u32::try_from(int(a)?).map_err(|_| PyValueError::new_err("a class index must be < 2**32"))
}

/// One item of a sequence of numbers, as `_floats`: None is missing (NaN), anything else
/// `float(item)`.
fn item(v: &Bound<'_, PyAny>) -> PyResult<f64> {
    if v.is_none() {
        Ok(f64::NAN)
    } else {
        float(v)
    }
}

/// A packed `repeated double` field from a sequence of numbers, as `_floats` reads it (numpy
/// arrays through `tolist()`); left out when empty.
fn put_floats(out: &mut Vec<u8>, tag: u32, values: &Bound<'_, PyAny>) -> PyResult<()> {
    let mark = out.len();
    let len = if let Ok(list) = values.cast_exact::<PyList>() {
        let field = open(out, tag, 8 * list.len());
        floats_of_list(out, list)?;
        close(out, field)
    } else if let Ok(tuple) = values.cast_exact::<PyTuple>() {
        let field = open(out, tag, 8 * tuple.len());
        floats_of_tuple(out, tuple)?;
        close(out, field)
    } else {
        let field = open(out, tag, 0);
        match values.getattr_opt("tolist")? {
            Some(tolist) => {
                let list = tolist.call0()?;
                match list.cast_exact::<PyList>() {
                    Ok(list) => floats_of_list(out, list)?,
                    Err(_) => floats_of_iter(out, &list)?,
                }
            }
            None => floats_of_iter(out, values)?,
        }
        close(out, field)
    };
    if len == 0 {
        out.truncate(mark); // empty: left out, as prost does
    }
    Ok(())
}

fn floats_of_iter(out: &mut Vec<u8>, values: &Bound<'_, PyAny>) -> PyResult<()> {
    for v in values.try_iter()? {
        out.extend_from_slice(&item(&v?)?.to_le_bytes());
    }
    Ok(())
}

/// Writes the exact floats at the start of a list's or a tuple's items (`get(i)`, borrowed)
/// into `out` without a capacity check per item; returns how many it wrote: it stops before the
/// first item that is not an exact float.
///
/// # Safety
/// The lock is held and `get(i)` is a valid object for every `i < n`.
#[cfg(not(feature = "abi3"))]
unsafe fn exact_floats(
    out: &mut Vec<u8>,
    n: usize,
    get: impl Fn(usize) -> *mut ffi::PyObject,
) -> usize {
    out.reserve(8 * n);
    let start = out.len();
    let dst = out.as_mut_ptr().add(start);
    let mut i = 0;
    while i < n {
        let v = get(i);
        if ffi::PyFloat_CheckExact(v) == 0 {
            break;
        }
        // in the room reserved above
        std::ptr::write_unaligned(
            dst.add(8 * i) as *mut [u8; 8],
            ffi::PyFloat_AS_DOUBLE(v).to_le_bytes(),
        );
        i += 1;
    }
    out.set_len(start + 8 * i);
    i
}

#[cfg(not(feature = "abi3"))]
fn floats_of_list(out: &mut Vec<u8>, list: &Bound<'_, PyList>) -> PyResult<()> {
    let py = list.py();
    let ptr = list.as_ptr();
    // SAFETY: `ptr` is a list (an exact one: no Python code runs to read it) and the lock is
    // held. Items are borrowed; past the exact floats, the size is read again at every step
    // because `float()` on an item may run Python code that changes the list, and such an item
    // is held (a new reference) while it runs.
    unsafe {
        let n = ffi::PyList_GET_SIZE(ptr);
        let mut i =
            exact_floats(out, n as usize, |i| ffi::PyList_GET_ITEM(ptr, i as isize)) as isize;
        while i < ffi::PyList_GET_SIZE(ptr) {
            let v = ffi::PyList_GET_ITEM(ptr, i);
            let value = if ffi::PyFloat_CheckExact(v) != 0 {
                ffi::PyFloat_AS_DOUBLE(v)
            } else {
                item(&Bound::from_borrowed_ptr(py, v))?
            };
            out.extend_from_slice(&value.to_le_bytes());
            i += 1;
        }
    }
    Ok(())
}

#[cfg(not(feature = "abi3"))]
fn floats_of_tuple(out: &mut Vec<u8>, tuple: &Bound<'_, PyTuple>) -> PyResult<()> {
    let py = tuple.py();
    let ptr = tuple.as_ptr();
    // SAFETY: `ptr` is a tuple (immutable, holding its items) and the lock is held.
    unsafe {
        let n = ffi::PyTuple_GET_SIZE(ptr);
        let first = exact_floats(out, n as usize, |i| ffi::PyTuple_GET_ITEM(ptr, i as isize));
        for i in first as isize..n {
            let v = ffi::PyTuple_GET_ITEM(ptr, i);
            out.extend_from_slice(&item(&Bound::from_borrowed_ptr(py, v))?.to_le_bytes());
        }
    }
    Ok(())
}

#[cfg(feature = "abi3")]
fn floats_of_list(out: &mut Vec<u8>, list: &Bound<'_, PyList>) -> PyResult<()> {
    for v in list.iter() {
        out.extend_from_slice(&item(&v)?.to_le_bytes());
    }
    Ok(())
}

#[cfg(feature = "abi3")]
fn floats_of_tuple(out: &mut Vec<u8>, tuple: &Bound<'_, PyTuple>) -> PyResult<()> {
    for v in tuple.iter() {
        out.extend_from_slice(&item(&v)?.to_le_bytes());
    }
    Ok(())
}

/// `mapping.items()`, a dict's without a call.
fn items<'py>(
    mapping: &Bound<'py, PyAny>,
) -> PyResult<Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
    if let Ok(d) = mapping.cast_exact::<PyDict>() {
        return Ok(d.iter().collect());
    }
    mapping
        .call_method0("items")?
        .try_iter()?
        .map(|pair| pair?.extract())
        .collect()
}

/// A label as `_fill_label`: class name, class index (int, bool, numpy integers), regression
/// value, or a `Label` message (anything with `SerializeToString`) or its serialized bytes.
pub fn label_of(a: &Bound<'_, PyAny>) -> PyResult<pb::Label> {
    use pb::label::Value;
    let value = if let Ok(s) = a.cast::<PyString>() {
        Value::ClassName(s.extract()?)
    } else if a.cast::<PyFloat>().is_ok() {
        Value::RegressionValue(float(a)?)
    } else if a.cast::<PyInt>().is_ok() || a.cast::<PyBool>().is_ok() {
        Value::ClassIndex(a.extract()?)
    } else if let Ok(bytes) = a.cast::<PyBytes>() {
        return <pb::Label as prost::Message>::decode(bytes.as_bytes())
            .map_err(|e| PyValueError::new_err(e.to_string()));
    } else if let Ok(serialize) = a.getattr("SerializeToString") {
        let bytes = serialize.call0()?;
        return <pb::Label as prost::Message>::decode(bytes.cast::<PyBytes>()?.as_bytes())
            .map_err(|e| PyValueError::new_err(e.to_string()));
    } else if a.hasattr("__index__")? {
        Value::ClassIndex(int32(a)?)
    } else if a.hasattr("__float__")? {
        Value::RegressionValue(float(a)?)
    } else {
        return Err(PyTypeError::new_err(format!(
            "label must be str, int, float or Label, not {}",
            a.get_type().name()?
        )));
    };
    Ok(pb::Label { value: Some(value) })
}

/// The names of `record`'s arguments, in the order of [`RecordArgs`]' fields (`request_id` is
/// the only one that may be given by position).
#[cfg(not(feature = "abi3"))]
const NAMES: [&str; 23] = [
    "request_id",
    "latency_seconds",
    "error_type",
    "model",
    "version",
    "time_unix_nano",
    "numeric_features",
    "categorical_features",
    "features",
    "predicted_class",
    "class_probabilities",
    "score",
    "regression_value",
    "input_tokens",
    "output_tokens",
    "time_to_first_token_seconds",
    "finish_reason",
    "operation",
    "response_model",
    "label",
    "traceparent",
    "tracestate",
    "attributes",
];

/// `Core.record` as a `METH_FASTCALL | METH_KEYWORDS` function bound to one `Core`.
#[cfg(not(feature = "abi3"))]
pub fn fast_record(core: &Bound<'_, crate::Core>) -> PyResult<Py<PyAny>> {
    /// A method definition CPython only reads.
    struct Def(ffi::PyMethodDef);
    // SAFETY: the definition is never written after it is built; CPython reads it with the lock.
    unsafe impl Sync for Def {}
    static DEF: Def = Def(ffi::PyMethodDef {
        ml_name: c"record".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: record_fastcall,
        },
        ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        ml_doc: c"Queues one inference record; False if it was dropped (queue full, closed, or an \
argument that cannot be read). Arguments as InferscopeClient.record."
            .as_ptr(),
    });
    let py = core.py();
    // SAFETY: DEF lives for ever; the new function holds a reference to `core` (its `self`).
    unsafe {
        let f = ffi::PyCFunction_NewEx(
            &DEF.0 as *const ffi::PyMethodDef as *mut ffi::PyMethodDef,
            core.as_ptr(),
            std::ptr::null_mut(),
        );
        Ok(Bound::from_owned_ptr_or_err(py, f)?.unbind())
    }
}

/// The argument names as interned strings: a keyword name from Python code is the same object,
/// so it is found by its address.
#[cfg(not(feature = "abi3"))]
static INTERNED: pyo3::sync::PyOnceLock<Vec<Py<PyString>>> = pyo3::sync::PyOnceLock::new();

/// The slot of a keyword argument's name.
#[cfg(not(feature = "abi3"))]
fn slot_of(py: Python<'_>, name: *mut ffi::PyObject) -> PyResult<usize> {
    let interned = INTERNED.get_or_init(py, || {
        NAMES
            .iter()
            .map(|n| PyString::intern(py, n).unbind())
            .collect()
    });
    if let Some(i) = interned.iter().position(|n| n.as_ptr() == name) {
        return Ok(i);
    }
    // SAFETY: keyword names are strings, borrowed from the call's `kwnames` tuple.
    let name = unsafe { Borrowed::from_ptr(py, name) };
    let name = name.cast::<PyString>()?;
    let text = name.to_cow()?;
    NAMES.iter().position(|n| **n == *text).ok_or_else(|| {
        PyTypeError::new_err(format!(
            "record() got an unexpected keyword argument '{text}'"
        ))
    })
}

/// The keyword names of the last call with keywords, its number of positional arguments, and
/// the slot of each keyword's value:
/// a call site passes the same tuple every time (a constant of its code object), so its names
/// are looked up once. Holds a reference to the tuple, so that its address is not reused.
#[cfg(not(feature = "abi3"))]
struct LastKwnames {
    names: *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    slots: [u8; 23],
}

#[cfg(not(feature = "abi3"))]
impl LastKwnames {
    /// Called with the lock held.
    fn set(&mut self, names: *mut ffi::PyObject, nargs: ffi::Py_ssize_t, slots: [u8; 23]) {
        // SAFETY: the lock is held; the old tuple's reference is the one taken here before.
        unsafe {
            ffi::Py_INCREF(names);
            if !self.names.is_null() {
                ffi::Py_DECREF(self.names);
            }
        }
        self.names = names;
        self.nargs = nargs;
        self.slots = slots;
    }
}

#[cfg(not(feature = "abi3"))]
thread_local! {
    /// Per thread (a `RefCell` needs no lock); its reference is not given back when a thread
    /// ends (one small tuple).
    static LAST_KWNAMES: std::cell::RefCell<LastKwnames> = const {
        std::cell::RefCell::new(LastKwnames { names: std::ptr::null_mut(), nargs: 0, slots: [0; 23] })
    };
}

/// The C function behind [`fast_record`]: `slf` is the `Core`, `args` the positional
/// arguments followed by the keyword arguments' values, `kwnames` the keywords' names.
#[cfg(not(feature = "abi3"))]
unsafe extern "C" fn record_fastcall(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let call = std::panic::AssertUnwindSafe(|| {
        // SAFETY: CPython calls this holding the lock, with `nargs` positional arguments and
        // then one value per name in `kwnames` (NULL when there are none) in `args`; all
        // borrowed for the call.
        let py = unsafe { Python::assume_attached() };
        let result = (|| -> PyResult<bool> {
            let core = unsafe { Borrowed::from_ptr(py, slf) };
            let core = unsafe { core.cast_unchecked::<crate::Core>() };
            let mut slots: [Option<Borrowed<'_, '_, PyAny>>; 23] = [None; 23];
            if nargs > 1 {
                return Err(PyTypeError::new_err(format!(
                    "record() takes at most 1 positional argument ({nargs} given)"
                )));
            }
            if nargs == 1 {
                slots[0] = Some(unsafe { Borrowed::from_ptr(py, *args) });
            }
            if !kwnames.is_null() {
                let n = unsafe { ffi::PyTuple_GET_SIZE(kwnames) };
                let cached = LAST_KWNAMES.with(|last| {
                    let last = last.borrow();
                    (last.names == kwnames && last.nargs == nargs).then_some(last.slots)
                });
                if let Some(cached) = cached {
                    for (i, &slot) in cached.iter().take(n as usize).enumerate() {
                        let value = unsafe { *args.add(nargs as usize + i) };
                        slots[slot as usize] = Some(unsafe { Borrowed::from_ptr(py, value) });
                    }
                } else {
                    let mut order = [0u8; 23];
                    for i in 0..n {
                        let slot = slot_of(py, unsafe { ffi::PyTuple_GET_ITEM(kwnames, i) })?;
                        if slots[slot].is_some() {
                            return Err(PyTypeError::new_err(format!(
                                "record() got multiple values for argument '{}'",
                                NAMES[slot]
                            )));
                        }
                        let value = unsafe { *args.offset(nargs + i) };
                        slots[slot] = Some(unsafe { Borrowed::from_ptr(py, value) });
                        order[i as usize] = slot as u8;
                    }
                    LAST_KWNAMES.with(|last| last.borrow_mut().set(kwnames, nargs, order));
                }
            }
            let slot = |i: usize| slots[i].as_deref();
            Ok(core.get().record_args(RecordArgs {
                request_id: slot(0),
                latency_seconds: slot(1),
                error_type: slot(2),
                model: slot(3),
                version: slot(4),
                time_unix_nano: slot(5),
                numeric_features: slot(6),
                categorical_features: slot(7),
                features: slot(8),
                predicted_class: slot(9),
                class_probabilities: slot(10),
                score: slot(11),
                regression_value: slot(12),
                input_tokens: slot(13),
                output_tokens: slot(14),
                time_to_first_token_seconds: slot(15),
                finish_reason: slot(16),
                operation: slot(17),
                response_model: slot(18),
                label: slot(19),
                traceparent: slot(20),
                tracestate: slot(21),
                attributes: slot(22),
            }))
        })();
        match result {
            Ok(queued) => PyBool::new(py, queued).to_owned().into_any().into_ptr(),
            Err(e) => {
                e.restore(py);
                std::ptr::null_mut()
            }
        }
    });
    match std::panic::catch_unwind(call) {
        Ok(result) => result,
        Err(_) => {
            // SAFETY: as above: called with the lock held.
            let py = unsafe { Python::assume_attached() };
            pyo3::exceptions::PyRuntimeError::new_err("inferscope: record() panicked").restore(py);
            std::ptr::null_mut()
        }
    }
}

impl RecordArgs<'_, '_> {
    /// Appends the record's `InferenceRecord` bytes to `out` (which may hold other bytes
    /// before them); on an error `out` may hold part of the record, and the caller drops it.
    pub fn encode(&self, out: &mut Vec<u8>) -> PyResult<()> {
        // InferenceRecord, in field-number order.
        put_string(out, 1, self.model, "model")?;
        put_string(out, 2, self.version, "version")?;
        put_text(out, 3, self.request_id)?;
        let time_unix_nano = match given(self.time_unix_nano) {
            Some(t) => int(t)?,
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
        };
        if time_unix_nano != 0 {
            encode_key(4, WireType::SixtyFourBit, out);
            out.extend_from_slice(&time_unix_nano.to_le_bytes());
        }
        if let Some(latency) = given(self.latency_seconds) {
            put_double(out, 5, float(latency)?);
        }
        put_text(out, 6, self.error_type)?;
        if let Some(numeric) = given(self.numeric_features) {
            put_floats(out, 7, numeric)?;
        }
        if let Some(categorical) = given(self.categorical_features) {
            for c in categorical.try_iter()? {
                put_str(out, 8, &str_of(&c?)?)?;
            }
        }
        if truthy(self.features)? {
            for (name, value) in items(self.features.unwrap())? {
                let field = open(out, 9, 0);
                put_nonempty(out, 1, &str_of(&name)?)?;
                if let Ok(category) = value.cast::<PyString>() {
                    put_str(out, 3, category)?;
                } else {
                    put_double(out, 2, item(&value)?); // None: missing (NaN)
                }
                close(out, field);
            }
        }
        self.encode_prediction(out)?;
        if let Some(label) = given(self.label) {
            prost::encoding::message::encode(13, &label_of(label)?, out);
        }
        put_string(out, 14, self.traceparent, "traceparent")?;
        put_string(out, 15, self.tracestate, "tracestate")?;
        if truthy(self.attributes)? {
            for (key, value) in items(self.attributes.unwrap())? {
                let field = open(out, 16, 0);
                put_nonempty(out, 1, &str_of(&key)?)?;
                put_nonempty(out, 2, &str_of(&value)?)?;
                close(out, field);
            }
        }
        Ok(())
    }

    /// The `prediction` oneof: classification, else regression, else generation, as
    /// `_fill_record` decides.
    fn encode_prediction(&self, out: &mut Vec<u8>) -> PyResult<()> {
        let (pc, probabilities, score) = (
            given(self.predicted_class),
            given(self.class_probabilities),
            given(self.score),
        );
        if pc.is_some() || probabilities.is_some() || score.is_some() {
            let field = open(out, 10, 0);
            if let Some(p) = pc {
                match p.cast::<PyString>() {
                    Ok(name) => put_nonempty(out, 1, name)?,
                    Err(_) => put_varint(out, 2, int32(p)? as u64),
                }
            }
            if let Some(p) = probabilities {
                put_floats(out, 3, p)?;
            }
            if let Some(score) = score {
                put_double(out, 4, float(score)?);
            }
            close(out, field);
        } else if let Some(v) = given(self.regression_value) {
            let field = open(out, 11, 0);
            let value = float(v)?;
            if value.to_bits() != 0 {
                put_double(out, 1, value);
            }
            close(out, field);
        } else if given(self.input_tokens).is_some()
            || given(self.output_tokens).is_some()
            || given(self.time_to_first_token_seconds).is_some()
            || truthy(self.finish_reason)?
            || truthy(self.operation)?
            || truthy(self.response_model)?
        {
            let field = open(out, 12, 0);
            for (tag, tokens) in [(1, self.input_tokens), (2, self.output_tokens)] {
                if let Some(t) = given(tokens) {
                    let t = int(t)?;
                    if t != 0 {
                        put_varint(out, tag, t);
                    }
                }
            }
            if let Some(ttft) = given(self.time_to_first_token_seconds) {
                put_double(out, 3, float(ttft)?);
            }
            put_string(out, 4, self.finish_reason, "finish_reason")?;
            put_string(out, 5, self.operation, "operation")?;
            put_string(out, 6, self.response_model, "response_model")?;
            close(out, field);
        }
        Ok(())
    }
}
