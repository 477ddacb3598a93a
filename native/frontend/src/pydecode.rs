//! The Python side of `decode`: class `RequestDecoder` of module `petcd._frontend`, which
//! builds petcd's request dataclasses (src/petcd/mvcc/requests.py) from the decoded fields.
//!
//! The dataclasses are frozen and slotted. An instance is made as `object.__new__(cls)`
//! does (the type's `tp_alloc`) and its fields are stored as `object.__setattr__` does
//! (`PyObject_GenericSetAttr`: the slot's descriptor, past the class's refusing
//! `__setattr__`), which is what their generated `__init__` does, without running a
//! Python frame per object. `RequestDecoder` checks at construction that each class is such
//! a dataclass with exactly the fields, in order, that it will store.

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple, PyType};

use crate::decode;

/// One dataclass: the type and its field names, in declaration order.
struct Class {
    cls: Py<PyType>,
    names: Vec<Py<PyString>>,
}

impl Class {
    fn new(cls: &Bound<'_, PyType>, expected: &[&str]) -> PyResult<Self> {
        let py = cls.py();
        let dataclasses = py.import("dataclasses")?;
        let fields = dataclasses.call_method1("fields", (cls,))?;
        let mut names = Vec::new();
        for f in fields.try_iter()? {
            names.push(f?.getattr("name")?.extract::<String>()?);
        }
        let params = cls.getattr("__dataclass_params__")?;
        let frozen: bool = params.getattr("frozen")?.extract()?;
        let slotted = cls.getattr("__dict__")?.contains("__slots__")?;
        // the generated __init__ would run it; the objects made here would not
        let post_init = cls.hasattr("__post_init__")?;
        if names != expected || !frozen || !slotted || post_init {
            return Err(PyTypeError::new_err(format!(
                "RequestDecoder: {} must be a frozen, slotted dataclass with fields {expected:?} \
                 and no __post_init__",
                cls.name()?
            )));
        }
        Ok(Class {
            cls: cls.clone().unbind(),
            names: names
                .iter()
                .map(|n| PyString::intern(py, n).unbind())
                .collect(),
        })
    }

    /// An instance with `values` stored in the fields, in order.
    fn make<'py>(
        &self,
        py: Python<'py>,
        values: &[Bound<'py, PyAny>],
    ) -> PyResult<Bound<'py, PyAny>> {
        debug_assert_eq!(values.len(), self.names.len());
        let cls = self.cls.bind(py);
        // SAFETY: the slot of a type object, called as object.__new__ calls it; the new
        // reference is owned by the Bound at once. Each field is stored through the type's
        // data descriptor for it (checked to exist at construction).
        unsafe {
            let tp = cls.as_type_ptr();
            let slot = ffi::PyType_GetSlot(tp, ffi::Py_tp_alloc);
            let alloc: ffi::allocfunc = if slot.is_null() {
                ffi::PyType_GenericAlloc
            } else {
                std::mem::transmute::<*mut std::ffi::c_void, ffi::allocfunc>(slot)
            };
            let raw = alloc(tp, 0);
            if raw.is_null() {
                return Err(PyErr::fetch(py));
            }
            let obj = Bound::from_owned_ptr(py, raw);
            for (name, value) in self.names.iter().zip(values) {
                if ffi::PyObject_GenericSetAttr(obj.as_ptr(), name.as_ptr(), value.as_ptr()) < 0 {
                    return Err(PyErr::fetch(py));
                }
            }
            Ok(obj)
        }
    }
}

/// Builds `PutRequest`, `DeleteRangeRequest` and `TxnRequest` (with its `Compare`s,
/// `RequestOp`s and their `RangeRequest`s) from request bytes; None for what `decode`
/// leaves to protobuf.
#[pyclass(module = "petcd._frontend", frozen)]
pub struct RequestDecoder {
    range: Class,
    put: Class,
    delete_range: Class,
    compare: Class,
    request_op: Class,
    txn: Class,
}

fn int<'py>(py: Python<'py>, v: i64) -> Bound<'py, PyAny> {
    v.into_pyobject(py).expect("int").into_any()
}

fn flag<'py>(py: Python<'py>, v: bool) -> Bound<'py, PyAny> {
    pyo3::types::PyBool::new(py, v).to_owned().into_any()
}

fn bytes<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyAny> {
    PyBytes::new(py, b).into_any()
}

impl RequestDecoder {
    fn make_put<'py>(&self, py: Python<'py>, p: &decode::Put<'_>) -> PyResult<Bound<'py, PyAny>> {
        self.put.make(
            py,
            &[
                bytes(py, p.key),
                bytes(py, p.value),
                int(py, p.lease),
                flag(py, p.prev_kv),
                flag(py, p.ignore_value),
                flag(py, p.ignore_lease),
            ],
        )
    }

    fn make_delete_range<'py>(
        &self,
        py: Python<'py>,
        d: &decode::DeleteRange<'_>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.delete_range.make(
            py,
            &[
                bytes(py, d.key),
                bytes(py, d.range_end),
                flag(py, d.prev_kv),
            ],
        )
    }

    fn make_range<'py>(
        &self,
        py: Python<'py>,
        r: &decode::Range<'_>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.range.make(
            py,
            &[
                bytes(py, r.key),
                bytes(py, r.range_end),
                int(py, r.limit),
                int(py, r.revision),
                int(py, i64::from(r.sort_order)),
                int(py, i64::from(r.sort_target)),
                flag(py, r.serializable),
                flag(py, r.keys_only),
                flag(py, r.count_only),
                int(py, r.min_mod_revision),
                int(py, r.max_mod_revision),
                int(py, r.min_create_revision),
                int(py, r.max_create_revision),
            ],
        )
    }

    fn make_op<'py>(&self, py: Python<'py>, op: &decode::Op<'_>) -> PyResult<Bound<'py, PyAny>> {
        let none = py.None().into_bound(py);
        let values = match op {
            decode::Op::Range(r) => [self.make_range(py, r)?, none.clone(), none.clone(), none],
            decode::Op::Put(p) => [none.clone(), self.make_put(py, p)?, none.clone(), none],
            decode::Op::DeleteRange(d) => [
                none.clone(),
                none.clone(),
                self.make_delete_range(py, d)?,
                none,
            ],
        };
        self.request_op.make(py, &values)
    }

    fn make_ops<'py>(
        &self,
        py: Python<'py>,
        ops: &[decode::Op<'_>],
    ) -> PyResult<Bound<'py, PyAny>> {
        let items = ops
            .iter()
            .map(|op| self.make_op(py, op))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(PyTuple::new(py, items)?.into_any())
    }
}

#[pymethods]
impl RequestDecoder {
    #[new]
    fn new(
        range: &Bound<'_, PyType>,
        put: &Bound<'_, PyType>,
        delete_range: &Bound<'_, PyType>,
        compare: &Bound<'_, PyType>,
        request_op: &Bound<'_, PyType>,
        txn: &Bound<'_, PyType>,
    ) -> PyResult<Self> {
        Ok(RequestDecoder {
            range: Class::new(
                range,
                &[
                    "key",
                    "range_end",
                    "limit",
                    "revision",
                    "sort_order",
                    "sort_target",
                    "serializable",
                    "keys_only",
                    "count_only",
                    "min_mod_revision",
                    "max_mod_revision",
                    "min_create_revision",
                    "max_create_revision",
                ],
            )?,
            put: Class::new(
                put,
                &[
                    "key",
                    "value",
                    "lease",
                    "prev_kv",
                    "ignore_value",
                    "ignore_lease",
                ],
            )?,
            delete_range: Class::new(delete_range, &["key", "range_end", "prev_kv"])?,
            compare: Class::new(
                compare,
                &[
                    "result",
                    "target",
                    "key",
                    "range_end",
                    "version",
                    "create_revision",
                    "mod_revision",
                    "value",
                    "lease",
                ],
            )?,
            request_op: Class::new(
                request_op,
                &[
                    "request_range",
                    "request_put",
                    "request_delete_range",
                    "request_txn",
                ],
            )?,
            txn: Class::new(txn, &["compare", "success", "failure"])?,
        })
    }

    /// A PutRequest from a `PutRequest` message's bytes, or None.
    fn put<'py>(&self, py: Python<'py>, data: &[u8]) -> PyResult<Option<Bound<'py, PyAny>>> {
        decode::put(data).map(|p| self.make_put(py, &p)).transpose()
    }

    /// A DeleteRangeRequest from a `DeleteRangeRequest` message's bytes, or None.
    fn delete_range<'py>(
        &self,
        py: Python<'py>,
        data: &[u8],
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        decode::delete_range(data)
            .map(|d| self.make_delete_range(py, &d))
            .transpose()
    }

    /// A TxnRequest from a `TxnRequest` message's bytes, or None.
    fn txn<'py>(&self, py: Python<'py>, data: &[u8]) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some(t) = decode::txn(data) else {
            return Ok(None);
        };
        let compares = t
            .compare
            .iter()
            .map(|c| {
                self.compare.make(
                    py,
                    &[
                        int(py, i64::from(c.result)),
                        int(py, i64::from(c.target)),
                        bytes(py, c.key),
                        bytes(py, c.range_end),
                        int(py, c.version),
                        int(py, c.create_revision),
                        int(py, c.mod_revision),
                        bytes(py, c.value),
                        int(py, c.lease),
                    ],
                )
            })
            .collect::<PyResult<Vec<_>>>()?;
        let values = [
            PyTuple::new(py, compares)?.into_any(),
            self.make_ops(py, &t.success)?,
            self.make_ops(py, &t.failure)?,
        ];
        self.txn.make(py, &values).map(Some)
    }
}
