# cython: language_level=3
"""The compiled core of minigrad's reverse-mode autograd.

Everything a training step pays for on every operation lives here, so that
the per-operation overhead is C, not interpreted Python:

* ``TensorBase``: the storage of a tensor (a backend array, its gradient, its
  ``requires_grad`` flag, the node that created it and which of the node's
  outputs it is, its version counter, its hooks);
* ``Function``: the graph node; ``Function.apply`` records it (device and
  dtype checks, grad mode, wrapping the outputs). A node may have several
  outputs;
* ``run_backward``: the iterative backward walk (Kahn's algorithm over the
  recorded nodes, so a chain of any depth works), in two modes: on raw
  arrays (every training step: each node's ``backward``), or recording the
  backward pass itself (``create_graph=True``: each node's differentiable
  ``vjp``, so the gradients can be differentiated again);
* ``unbroadcast``: summing a gradient back to the shape of a broadcast input.

The numeric work itself is done by each Function's ``forward``/``backward``
on raw backend arrays (or its ``vjp`` on Tensors); this module never
imports NumPy or CuPy.
"""

from contextvars import ContextVar

# Grad mode is per thread/context, like PyTorch's, so a no_grad block in one
# thread does not switch autograd off in another.
_GRAD_ENABLED = ContextVar("minigrad_grad_enabled", default=True)
cdef object _grad_enabled_get = _GRAD_ENABLED.get
cdef object _grad_enabled_set = _GRAD_ENABLED.set
cdef object _grad_enabled_reset = _GRAD_ENABLED.reset

# The Python-level Tensor class (minigrad.tensor.Tensor); set once at import
# so that outputs created here are full Tensors with all their methods.
cdef object _tensor_type = None

# Array-library scalar types (numpy.generic): a NumPy reduction to 0-d
# returns one of these instead of an array, and the engine turns it back
# into a 0-d array so that every Tensor holds an array.
cdef tuple _scalar_types = ()

# Incremented by every backward walk; a node whose mark differs from the
# current walk has not been visited yet (cheaper than a visited-set).
cdef long long _walk_counter = 0

# The type of the last raw gradient seen (numpy.ndarray, cupy.ndarray): a
# gradient of that type is not a Tensor, without an isinstance walk.
cdef object _grad_array_type = None


def set_tensor_type(cls):
    """Register the Python ``Tensor`` subclass the engine creates outputs of."""
    global _tensor_type
    if not issubclass(cls, TensorBase):
        raise TypeError(f"{cls!r} must subclass TensorBase")
    _tensor_type = cls


def register_scalar_types(types):
    """Declare scalar types (e.g. ``numpy.generic``) that must become 0-d arrays."""
    global _scalar_types
    _scalar_types = tuple(types)


cdef inline object _as_array(object value, object backend):
    if isinstance(value, _scalar_types):
        return backend.xp.asarray(value)
    return value


def is_grad_enabled():
    """Return True if operations are currently recorded for backward."""
    return bool(_grad_enabled_get())


def _set_grad_enabled(bint mode):
    """Set grad mode in the current context; returns a token for ``_reset``."""
    return _grad_enabled_set(mode)


def _reset_grad_enabled(token):
    _grad_enabled_reset(token)


cdef inline bint _is_float(object dtype):
    # ml_dtypes' bfloat16 is a floating type of kind "V" (minigrad._dtypes.is_floating, without importing NumPy).
    return dtype.kind == "f" or (dtype.kind == "V" and dtype.name == "bfloat16")


cdef object _root_array(object a):
    """The array that owns the memory ``a`` views (``a`` itself when it owns it)."""
    cdef object b = getattr(a, "base", None)
    while b is not None:
        a = b
        b = getattr(a, "base", None)
    return a


cdef class VersionCounter:
    """How many times a storage was modified in place.

    Shared by a tensor and every view of its storage (``detach()``,
    ``.data``, slices, reshapes), so that a change through any of them is
    seen by backward, which refuses stale saved values.
    """

    cdef public unsigned long long value


cdef class HookHandle:
    """Returned by ``register_hook`` and friends: ``handle.remove()`` unregisters the hook."""

    cdef list _hooks
    cdef object _fn

    def remove(self):
        """Unregister the hook (a no-op when it is already gone)."""
        if self._hooks is not None:
            for i, fn in enumerate(self._hooks):
                if fn is self._fn:
                    del self._hooks[i]
                    break
            self._hooks = None


cdef HookHandle _add_hook(list hooks, object fn):
    if not callable(fn):
        raise TypeError(f"a hook must be callable, got {type(fn).__name__}")
    hooks.append(fn)
    cdef HookHandle h = HookHandle.__new__(HookHandle)
    h._hooks = hooks
    h._fn = fn
    return h


cdef class TensorBase:
    """Storage and autograd state of a tensor (see ``minigrad.Tensor``).

    The fields are C members so that the engine reads them without a
    dictionary lookup; ``minigrad.Tensor`` adds the user-facing methods.
    """

    cdef object _array
    cdef object _grad
    cdef bint _requires_grad
    cdef Function _node
    # Which output of ``_node`` this tensor is (0 for single-output nodes).
    cdef Py_ssize_t _output_nr
    cdef object _backend
    # Shared with views of the same storage; None until first needed (a
    # tensor nobody viewed or modified is at version 0).
    cdef VersionCounter _vc
    # Leaf hooks: on the gradient before it is accumulated, and after.
    cdef list _hooks
    cdef list _post_hooks
    cdef object __weakref__

    # ----------------------------------------------------------- storage
    @property
    def array(self):
        """The raw backend array (``numpy.ndarray`` on CPU, ``cupy.ndarray`` on CUDA).

        Assigning replaces the storage; the new array must have the same
        shape, dtype and array type.
        """
        return self._array

    @array.setter
    def array(self, value):
        old = self._array
        if old is not None:
            if type(value) is not type(old):
                raise TypeError(
                    f"cannot assign a {type(value).__name__} to the storage of a "
                    f"tensor on {self._backend.device}: expected {type(old).__name__}"
                )
            if value.shape != old.shape or value.dtype != old.dtype:
                raise ValueError(
                    f"cannot assign an array of shape {tuple(value.shape)} and dtype "
                    f"{value.dtype} to a tensor of shape {tuple(old.shape)} and dtype {old.dtype}"
                )
        self._array = value

    @property
    def backend(self):
        """The ``Backend`` object (one per device) that owns this tensor's array."""
        return self._backend

    @property
    def shape(self):
        """The tensor's shape, as a tuple of ints."""
        return self._array.shape

    @property
    def ndim(self):
        """Number of dimensions."""
        return self._array.ndim

    @property
    def dtype(self):
        """Element type (a ``numpy.dtype``: float32, float64, int64, bool, ...)."""
        return self._array.dtype

    @property
    def device(self):
        """The ``minigrad.Device`` the tensor lives on."""
        return self._backend.device

    # ---------------------------------------------------------- autograd
    @property
    def requires_grad(self):
        """Whether operations on this tensor are recorded for backward."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value):
        cdef bint flag = bool(value)
        if flag and not _is_float(self._array.dtype):
            raise RuntimeError(
                f"only floating point tensors can require gradients, got dtype "
                f"{self._array.dtype}"
            )
        if self._node is not None and not flag:
            raise RuntimeError(
                "you can only change requires_grad of leaf tensors; use .detach() "
                "to get a tensor that does not require grad"
            )
        self._requires_grad = flag

    @property
    def grad(self):
        """The accumulated gradient (a Tensor), or None before any backward."""
        return self._grad

    @grad.setter
    def grad(self, value):
        cdef TensorBase g
        if value is None:
            self._grad = None
            return
        if not isinstance(value, TensorBase):
            raise TypeError(f"grad must be a Tensor or None, got {type(value).__name__}")
        g = <TensorBase>value
        if g._array.shape != self._array.shape:
            raise ValueError(
                f"grad has shape {tuple(g._array.shape)} but the tensor has shape "
                f"{tuple(self._array.shape)}"
            )
        if g._array.dtype != self._array.dtype:
            raise TypeError(f"grad has dtype {g._array.dtype}, expected {self._array.dtype}")
        if g._backend is not self._backend:
            raise RuntimeError(
                f"grad is on {g._backend.device} but the tensor is on {self._backend.device}"
            )
        self._grad = g

    @property
    def grad_fn(self):
        """The ``Function`` node that created this tensor (None for leaves)."""
        return self._node

    @property
    def output_nr(self):
        """Which output of ``grad_fn`` this tensor is (0 for leaves and single-output nodes)."""
        return self._output_nr

    @property
    def is_leaf(self):
        """True for tensors not created by a recorded operation."""
        return self._node is None

    @property
    def _version(self):
        """How many times this tensor's storage (through it or any view) was modified in place."""
        return self._vc.value if self._vc is not None else 0

    def _bump_version(self):
        """Record an in-place modification (called by every in-place method)."""
        if self._vc is None:
            self._vc = VersionCounter.__new__(VersionCounter)
        self._vc.value += 1

    def _share_version(self, TensorBase base):
        """Make this tensor, a view of ``base``'s storage, share ``base``'s version counter."""
        if base._vc is None:
            base._vc = VersionCounter.__new__(VersionCounter)
        self._vc = base._vc

    def retain_grad(self):
        """Keep ``.grad`` for this non-leaf tensor after backward (like PyTorch)."""
        if self._node is None:
            return
        if not self._requires_grad:
            raise RuntimeError("can't retain_grad on a tensor that does not require grad")
        import weakref
        if self._node._retained is None:
            self._node._retained = {}
        self._node._retained[self._output_nr] = weakref.ref(self)

    @property
    def retains_grad(self):
        """True if ``retain_grad()`` was called on this non-leaf tensor."""
        node = self._node
        return node is not None and node._retained is not None and self._output_nr in node._retained

    def register_hook(self, hook):
        """Call ``hook(grad)`` each time a gradient for this tensor is computed.

        The hook may return a Tensor to use instead of ``grad`` (same shape
        and dtype), or None to leave it. On a leaf the hook sees the total
        gradient of one backward pass before it is accumulated into
        ``.grad``; on a non-leaf, the gradient flowing into its creator.
        Returns a handle whose ``remove()`` unregisters the hook.

        Example::

            x = minigrad.ones(3, requires_grad=True)
            h = x.register_hook(lambda g: g * 2)
            (x * x).sum().backward()      # x.grad == 4·x
            h.remove()
        """
        if not self._requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that does not require grad")
        if self._node is None:
            if self._hooks is None:
                self._hooks = []
            return _add_hook(self._hooks, hook)
        node = self._node
        if node._pre_hooks is None:
            node._pre_hooks = {}
        hooks = node._pre_hooks.setdefault(self._output_nr, [])
        return _add_hook(hooks, hook)

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(tensor)`` on a leaf after its ``.grad`` has been accumulated in a backward pass.

        Runs once per backward pass, when every gradient for this leaf has
        arrived (what data-parallel training uses to start communicating a
        parameter's gradient while the rest of the backward runs). Returns
        a handle whose ``remove()`` unregisters the hook.
        """
        if self._node is not None:
            raise RuntimeError("post accumulate grad hooks can only be registered on leaf tensors")
        if not self._requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that does not require grad")
        if self._post_hooks is None:
            self._post_hooks = []
        return _add_hook(self._post_hooks, hook)

    def _set_fields(self, array, backend, requires_grad=False):
        """Initialise a freshly allocated tensor (used by ``Tensor.__init__``)."""
        self._array = array
        self._backend = backend
        self._grad = None
        self._node = None
        self._output_nr = 0
        if requires_grad and not _is_float(array.dtype):
            raise RuntimeError(
                f"only floating point tensors can require gradients, got dtype {array.dtype}"
            )
        self._requires_grad = bool(requires_grad)

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        """Compute gradients of this tensor with respect to graph leaves.

        ``gradient`` is the upstream gradient (required unless the tensor
        has a single element); gradients are accumulated into the ``.grad``
        of every leaf that requires grad (or only of ``inputs``, leaves or
        not, when given). The graph is freed afterwards unless
        ``retain_graph`` (default: ``create_graph``). With
        ``create_graph=True`` the backward pass is itself recorded, so the
        ``.grad`` it produces can be differentiated again.

        Example::

            x = minigrad.tensor([1.0, 2.0], requires_grad=True)
            (x * x).sum().backward()     # x.grad == [2, 4]
        """
        if retain_graph is None:
            retain_graph = create_graph
        if inputs is not None:
            inputs = _as_tensor_tuple(inputs, "inputs")
            if not inputs:
                raise RuntimeError("backward(): inputs= was given but is empty")
        run_backward((self,), (gradient,), bool(retain_graph), bool(create_graph), inputs, True, True)


cdef tuple _as_tensor_tuple(object value, str name):
    if isinstance(value, TensorBase):
        return (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a Tensor or a sequence of Tensors, got {type(value).__name__}") from None
    for i, t in enumerate(items):
        if not isinstance(t, TensorBase):
            raise TypeError(f"{name}[{i}] must be a Tensor, got {type(t).__name__}")
    return items


cdef inline TensorBase _new_tensor(object array, object backend, bint requires_grad):
    cdef TensorBase t = <TensorBase>TensorBase.__new__(_tensor_type)
    t._array = array
    t._backend = backend
    t._requires_grad = requires_grad
    return t


cdef inline TensorBase _node_output(object array, object backend, Function node, Py_ssize_t nr):
    """A Tensor standing for output ``nr`` of ``node`` (gradients flow into the node)."""
    cdef TensorBase t = _new_tensor(array, backend, True)
    t._node = node
    t._output_nr = nr
    return t


def make_tensor(array, backend, bint requires_grad=False):
    """Wrap a backend array in a Tensor without copying or checking it.

    For backends and Functions; users call ``minigrad.tensor``.
    """
    if requires_grad and not _is_float(array.dtype):
        raise RuntimeError(
            f"only floating point tensors can require gradients, got dtype {array.dtype}"
        )
    return _new_tensor(array, backend, requires_grad)


cdef object _base_vjp = None  # Function.vjp, to tell whether a subclass overrides it


cdef class Function:
    """A differentiable operation and, once applied, a node of the graph.

    Subclasses implement ``forward(*args, **kwargs)`` on raw backend arrays
    (Tensor arguments arrive as arrays, everything else unchanged) and
    return one array, or a tuple of arrays for several outputs (then
    ``apply`` returns a tuple of Tensors). ``backward(*grads)`` receives one
    gradient per output (None for an output that received none) and
    returns one gradient per positional argument (a tuple, or a single
    array for one argument; None where there is none; trailing entries for
    non-tensor arguments may be left out).

    For gradients of gradients (``create_graph=True``) a subclass also
    defines ``vjp(*grads)``: the same backward written with differentiable
    minigrad operations on Tensors, using ``self.saved_as_tensors()``. A
    Function that defines only ``vjp`` gets its ``backward`` from it; one
    that defines only ``backward`` still gives first derivatives under
    ``create_graph=True`` but cannot be differentiated twice.

    Inside the methods ``self.xp`` is the array namespace (numpy or cupy)
    and ``self.backend`` the device's backend; ``self.needs_input_grad[i]``
    tells whether input ``i`` needs a gradient;
    ``self.save_for_backward(*arrays)`` keeps arrays for backward (released
    when the graph is freed); ``self.mark_non_differentiable(*outputs)``
    declares outputs (statistics, indices) that never get a gradient.

    Floating Tensor arguments must share one dtype (minigrad does not
    up-cast silently) unless the class sets ``mixed_precision = True``: the
    normalizers do, so a float16 input meets float32 parameters (each
    gradient is still returned in its own input's dtype).

    Example::

        class Square(Function):
            def forward(self, x):
                self.save_for_backward(x)
                return x * x

            def backward(self, grad):          # raw arrays: the fast path
                (x,) = self.saved_tensors
                return 2 * x * grad

            def vjp(self, grad):               # Tensors: differentiable again
                (x,) = self.saved_as_tensors()
                return 2 * x * grad

        y = Square.apply(minigrad.tensor([3.0], requires_grad=True))
    """

    #: Whether floating arguments of different dtypes are accepted (see above).
    mixed_precision = False

    cdef public object backend
    cdef public object xp
    cdef public tuple needs_input_grad
    cdef public tuple saved_tensors
    # Set by forward when the output lives on another backend (device copies).
    cdef public object output_backend
    cdef tuple _parents
    # Which output of each parent node feeds each input (None: all are 0).
    cdef tuple _parent_nrs
    # The Tensor arguments (None elsewhere) and their versions when recorded.
    cdef tuple _inputs
    cdef tuple _versions
    # Number of outputs; a single output keeps its metadata unboxed.
    cdef Py_ssize_t _n_out
    cdef object _out_shape
    cdef object _out_dtype
    cdef tuple _out_differentiable
    cdef object _retained
    cdef object _pre_hooks
    cdef object _gacc
    cdef long long _mark
    cdef Py_ssize_t _deps
    cdef int _needed
    cdef bint _freed
    # id() of each output array, to tell which saved arrays are outputs (a
    # saved array is alive since forward, so an equal id is the same object).
    cdef Py_ssize_t _out_id
    cdef tuple _out_ids
    cdef list _non_differentiable
    cdef object __weakref__

    @classmethod
    def apply(cls, *args, **kwargs):
        """Run ``forward`` on the arrays of ``args`` and record the node."""
        return _apply(cls, args, kwargs)

    def forward(self, *args, **kwargs):
        """Compute the output array(s) from input arrays (override)."""
        raise NotImplementedError(f"{type(self).__name__}.forward is not implemented")

    def backward(self, *grads):
        """Return the gradients of the inputs given the outputs' (override).

        The default evaluates ``vjp`` on the arrays (without recording), so
        a Function may define ``vjp`` alone.
        """
        if getattr(type(self), "vjp") is _base_vjp:
            raise NotImplementedError(f"{type(self).__name__}.backward is not implemented")
        token = _grad_enabled_set(False)
        try:
            out = self.vjp(*[None if g is None else _new_tensor(g, self.backend, False) for g in grads])
        finally:
            _grad_enabled_reset(token)
        if isinstance(out, tuple):
            return tuple(None if g is None else (<TensorBase>g)._array for g in out)
        return None if out is None else (<TensorBase>out)._array

    def vjp(self, *grads):
        """The backward as differentiable operations on Tensors (override for double backward)."""
        raise NotImplementedError(f"{type(self).__name__}.vjp is not implemented")

    def save_for_backward(self, *arrays):
        """Keep arrays needed by ``backward``; freed with the graph."""
        self.saved_tensors = arrays

    def mark_non_differentiable(self, *outputs):
        """Declare outputs (arrays this forward returns) that never receive a gradient."""
        if self._non_differentiable is None:
            self._non_differentiable = []
        self._non_differentiable.extend(outputs)

    def saved_as_tensors(self):
        """The saved arrays as Tensors, for ``vjp``.

        A saved input or output is connected to the graph (so what ``vjp``
        computes from it can be differentiated again); any other saved
        array is a constant.
        """
        if self._freed:
            raise RuntimeError(
                f"{type(self).__name__}: the saved arrays were freed by an earlier backward; pass "
                f"retain_graph=True (or create_graph=True) to it"
            )
        return tuple(self._saved_value(a) for a in (self.saved_tensors or ()))

    cdef object _saved_value(self, object a):
        cdef Py_ssize_t k
        if a is None or not hasattr(a, "dtype"):
            return a  # None, or a Python number saved as it is
        if self._inputs is not None:
            for t in self._inputs:
                if t is not None and (<TensorBase>t)._array is a:
                    return t  # the argument itself: a leaf, a node's output, or a constant
            ids = self._out_ids if self._n_out != 1 else (self._out_id,)
            for k in range(len(ids)):
                if ids[k] == id(a) and (self._out_differentiable is None or self._out_differentiable[k]):
                    backend = self.output_backend if self.output_backend is not None else self.backend
                    return _node_output(a, backend, self, k)
        return _new_tensor(a, self.backend, False)

    @property
    def inputs(self):
        """The Tensor arguments of this node (None for other arguments), for ``vjp``.

        They are the graph's own tensors, so what ``vjp`` computes from them
        can be differentiated again. Available until the graph is freed.
        """
        if self._freed:
            raise RuntimeError(
                f"{type(self).__name__}: the inputs were released by an earlier backward; pass "
                f"retain_graph=True (or create_graph=True) to it"
            )
        return self._inputs if self._inputs is not None else ()

    @property
    def parents(self):
        """Per positional input: its creator Function, the leaf Tensor, or None."""
        return self._parents

    @property
    def next_functions(self):
        """Per positional input: ``(creator Function or leaf Tensor or None, output index)`` (PyTorch's shape)."""
        if self._parents is None:
            return ()
        nrs = self._parent_nrs if self._parent_nrs is not None else (0,) * len(self._parents)
        return tuple(zip(self._parents, nrs))

    def __repr__(self):
        return f"<{type(self).__name__} backward node>"

    cdef void _release(self):
        # Drop everything saved for backward; keep the structure so a second
        # walk can report the error instead of silently producing zeros.
        self.saved_tensors = None
        self._inputs = None
        self._versions = ()
        attrs = getattr(self, "__dict__", None)  # Python subclasses keep state there
        if attrs:
            attrs.clear()
        self._freed = True


cdef object _apply(type cls, tuple args, dict kwargs):
    cdef Py_ssize_t n = len(args)
    cdef Py_ssize_t i, k, m
    cdef list arrays = list(args)
    cdef object backend = None
    cdef object float_dtype = None
    cdef object dt
    cdef object a
    cdef TensorBase t, r
    cdef bint any_requires = False
    cdef bint record, multi, diff
    cdef Function fn
    cdef list parents
    cdef list needs
    cdef list nrs

    for i in range(n):
        a = args[i]
        if isinstance(a, TensorBase):
            t = <TensorBase>a
            arrays[i] = t._array
            if backend is None:
                backend = t._backend
            elif t._backend is not backend:
                raise RuntimeError(
                    f"{cls.__name__}: expected all tensors on the same device, but "
                    f"argument {i} is on {t._backend.device} and an earlier one on "
                    f"{backend.device}; move them with .to(device) first"
                )
            dt = t._array.dtype
            if _is_float(dt):
                if float_dtype is None:
                    float_dtype = dt
                elif dt is not float_dtype and dt != float_dtype and not cls.mixed_precision:
                    raise TypeError(
                        f"{cls.__name__}: mixed floating dtypes {float_dtype} and {dt} "
                        f"(argument {i}); minigrad does not silently up-cast, convert "
                        f"explicitly with .to({float_dtype.name}) or .to({dt.name})"
                    )
            if t._requires_grad:
                any_requires = True
    if backend is None:
        raise TypeError(f"{cls.__name__}.apply needs at least one Tensor argument")

    record = any_requires and _grad_enabled_get()
    fn = <Function>cls()
    fn.backend = backend
    fn.xp = backend.xp
    if record:
        parents = [None] * n
        needs = [False] * n
        nrs = None
        inputs = [None] * n
        versions = [0] * n
        for i in range(n):
            a = args[i]
            if isinstance(a, TensorBase):
                t = <TensorBase>a
                inputs[i] = t
                if t._vc is not None:
                    versions[i] = t._vc.value
                if t._requires_grad:
                    needs[i] = True
                    if t._node is not None:
                        parents[i] = t._node
                        if t._output_nr:
                            if nrs is None:
                                nrs = [0] * n
                            nrs[i] = t._output_nr
                    else:
                        parents[i] = t
        fn.needs_input_grad = tuple(needs)
        fn._inputs = tuple(inputs)
        fn._versions = tuple(versions)
        if nrs is not None:
            fn._parent_nrs = tuple(nrs)
    else:
        fn.needs_input_grad = (False,) * n

    out = fn.forward(*arrays, **kwargs)
    out_backend = fn.output_backend if fn.output_backend is not None else backend

    if type(out) is not tuple:
        raw = out
        out = _as_array(out, backend)
        if out is not raw and fn.saved_tensors:
            _resave(fn, raw, out)
        if record and (not _is_float(out.dtype) or fn._non_differentiable is not None):
            record = False  # integer/bool outputs (argmax, comparisons) are constants
        result = _new_tensor(out, out_backend, record)
        if record:
            fn._parents = tuple(parents)
            fn._n_out = 1
            fn._out_shape = out.shape
            fn._out_dtype = out.dtype
            result._node = fn
            fn._out_id = id(out)
        _share_view_versions(result, args)
        return result

    # Several outputs: each a Tensor of the graph unless it is marked
    # non-differentiable (or not floating).
    m = len(out)
    outs = [_as_array(o, backend) for o in out]
    if fn.saved_tensors:
        for k in range(m):
            if outs[k] is not out[k]:
                _resave(fn, out[k], outs[k])
    results = []
    diffs = []
    for k in range(m):
        o = outs[k]
        diff = record and _is_float(o.dtype)
        if diff and fn._non_differentiable is not None:
            for nd in fn._non_differentiable:
                if nd is o:
                    diff = False
                    break
        diffs.append(diff)
        r = _new_tensor(o, out_backend, diff)
        if diff:
            r._node = fn
            r._output_nr = k
        _share_view_versions(r, args)
        results.append(r)
    if record and any(diffs):
        fn._parents = tuple(parents)
        fn._n_out = m
        fn._out_differentiable = tuple(diffs)
        if m == 1:  # a one-element tuple: the metadata of a single output, unboxed
            fn._out_shape = outs[0].shape
            fn._out_dtype = outs[0].dtype
            fn._out_id = id(outs[0])
        else:
            fn._out_shape = tuple(o.shape for o in outs)
            fn._out_dtype = tuple(o.dtype for o in outs)
            fn._out_ids = tuple(id(o) for o in outs)
    fn._non_differentiable = None
    return tuple(results)


cdef void _resave(Function fn, object scalar, object array):
    """A saved NumPy scalar that became the output's 0-d array is saved as that array (so it is the output)."""
    fn.saved_tensors = tuple(array if a is scalar else a for a in fn.saved_tensors)


cdef inline void _share_view_versions(TensorBase result, tuple args):
    """An output that views an input's storage shares the input's version counter."""
    cdef TensorBase t
    if getattr(result._array, "base", None) is None:
        return
    root = _root_array(result._array)
    for a in args:
        if isinstance(a, TensorBase):
            t = <TensorBase>a
            if _root_array(t._array) is root:
                result._share_version(t)
                return


# --------------------------------------------------------------- backward
cdef object _as_grad_array(TensorBase root, object grad, bint create_graph):
    """Validate/convert the gradient given for ``root`` (an array; a Tensor when ``create_graph``)."""
    cdef TensorBase g
    shape = root._array.shape
    if grad is None:
        if root._array.size != 1:
            raise RuntimeError(
                f"grad can be implicitly created only for single-element outputs; "
                f"backward() on a tensor of shape {tuple(shape)} needs a grad "
                f"argument of that shape"
            )
        arr = root._backend.xp.ones_like(root._array)
        return _new_tensor(arr, root._backend, False) if create_graph else arr
    if isinstance(grad, TensorBase):
        g = <TensorBase>grad
        if g._backend is not root._backend:
            raise RuntimeError(
                f"grad is on {g._backend.device} but the tensor is on {root._backend.device}"
            )
        arr = g._array
    else:
        g = None
        arr = root._backend.asarray(grad, dtype=root._array.dtype)
    if arr.shape != shape:
        raise RuntimeError(
            f"grad has shape {tuple(arr.shape)} but the tensor has shape {tuple(shape)}; "
            f"they must match"
        )
    if arr.dtype != root._array.dtype:
        raise TypeError(f"grad has dtype {arr.dtype}, expected {root._array.dtype}")
    if create_graph:
        return g if g is not None else _new_tensor(arr, root._backend, False)
    # Not copied: backward functions never write to their grad argument, and
    # the caller marks this array as handed out, so a leaf that would receive
    # it unchanged gets a copy (its .grad never aliases the caller's array).
    return arr


cdef object _check_grad(Function node, Py_ssize_t i, object g, object shape, object dtype):
    if g.shape != shape:
        raise RuntimeError(
            f"{type(node).__name__}.backward returned a gradient of shape "
            f"{tuple(g.shape)} for input {i}, whose shape is {tuple(shape)}"
        )
    if g.dtype != dtype:
        raise RuntimeError(
            f"{type(node).__name__}.backward returned a {g.dtype} gradient for "
            f"input {i}, whose dtype is {dtype}"
        )
    return g


cdef void _check_versions(Function node) except *:
    cdef TensorBase t
    cdef unsigned long long now
    cdef Py_ssize_t i
    cdef tuple inputs = node._inputs
    if inputs is None:
        return
    for i in range(len(inputs)):
        if inputs[i] is None:
            continue
        t = <TensorBase>inputs[i]
        now = t._vc.value if t._vc is not None else 0
        if now != <unsigned long long>node._versions[i]:
            raise RuntimeError(
                f"one of the tensors needed for the gradient of {type(node).__name__} (shape "
                f"{tuple(t._array.shape)}) has been modified by an in-place operation since it was "
                f"used (version {node._versions[i]}, now {now}); compute the backward before changing it, "
                f"or change a copy (clone()) instead"
            )


cdef inline object _wrap(object g, object backend, bint create_graph):
    """A gradient as hooks see it: a Tensor."""
    if create_graph or isinstance(g, TensorBase):
        return g
    return _new_tensor(g, backend, False)


cdef inline object _unwrap(object g, bint create_graph):
    if create_graph:
        return g
    return (<TensorBase>g)._array


cdef object _run_hooks(list hooks, object g, object backend, bint create_graph, object shape, object dtype):
    """Apply tensor hooks to gradient ``g``; each may return a replacement."""
    cdef object t = _wrap(g, backend, create_graph)
    for hook in list(hooks):
        new = hook(t)
        if new is not None:
            if not isinstance(new, TensorBase):
                raise TypeError(f"a tensor hook must return a Tensor or None, got {type(new).__name__}")
            if new.shape != shape or new.dtype != dtype:
                raise RuntimeError(
                    f"a tensor hook returned a gradient of shape {tuple(new.shape)} and dtype {new.dtype}; "
                    f"expected shape {tuple(shape)} and dtype {dtype}"
                )
            t = new
    return _unwrap(t, create_graph)


cdef class _Walk:
    """State of one backward pass (see ``run_backward``)."""

    cdef bint create_graph
    cdef bint retain_graph
    cdef bint accumulate          # into .grad (backward) rather than returned (grad())
    cdef dict leaf_slots          # capture mode: id(leaf) -> slot
    cdef dict node_slots          # capture mode: id(node) -> [(output nr, slot), ...]
    cdef list results             # capture mode: slot -> gradient
    cdef list targets             # capture mode: slot -> tensor
    cdef dict pending             # leaves with hooks: id -> [leaf, edges left, summed grad]
    cdef set handed               # ids of arrays given to a .grad (never alias two)

    cdef inline bint capturing(self):
        return self.leaf_slots is not None

    cdef object add(self, object acc, object g, object backend):
        if acc is None:
            return g
        if self.create_graph:
            return acc + g
        return _as_array(acc + g, backend)

    cdef void leaf_grad(self, TensorBase leaf, object g) except *:
        """A gradient arriving at a leaf along one edge."""
        cdef list entry
        if self.capturing():
            slot = self.leaf_slots.get(id(leaf))
            if slot is not None:
                self.results[slot] = self.add(self.results[slot], g, leaf._backend)
            return
        entry = self.pending.get(id(leaf)) if self.pending else None
        if entry is None:
            self.store_leaf(leaf, g)
            return
        entry[2] = self.add(entry[2], g, leaf._backend)
        entry[1] -= 1
        if entry[1] == 0:
            self.finish_hooked_leaf(leaf, entry[2])

    cdef void finish_hooked_leaf(self, TensorBase leaf, object g) except *:
        if leaf._hooks:
            g = _run_hooks(leaf._hooks, g, leaf._backend, self.create_graph, leaf._array.shape,
                           leaf._array.dtype)
        self.store_leaf(leaf, g)
        if leaf._post_hooks:
            for hook in list(leaf._post_hooks):
                hook(leaf)

    cdef void store_leaf(self, TensorBase leaf, object g) except *:
        cdef TensorBase acc
        if self.create_graph:
            if leaf._grad is None:
                # Never let two .grad fields (or the caller's tensor) be one object.
                leaf._grad = g + 0 if id(g) in self.handed else g
                self.handed.add(id(leaf._grad))
            else:
                leaf._grad = leaf._grad + g
            return
        if leaf._grad is None:
            # Reuse the array unless it is a view or was already given to another
            # leaf: then an in-place update of one .grad cannot change another.
            if getattr(g, "base", None) is not None or id(g) in self.handed:
                g = g.copy()
            self.handed.add(id(g))
            leaf._grad = _new_tensor(g, leaf._backend, False)
        else:
            acc = <TensorBase>leaf._grad
            acc._array = _as_array(acc._array + g, acc._backend)


# LIFOs of nodes as a list and a top index: ``list.pop`` reallocates
# whenever a list drops below half its capacity, which on a chain of nodes
# is every pop.
cdef inline void _push(list items, Py_ssize_t* top, object x):
    if top[0] < len(items):
        items[top[0]] = x
    else:
        items.append(x)
    top[0] += 1


cdef inline object _pop(list items, Py_ssize_t* top):
    top[0] -= 1
    x = items[top[0]]
    items[top[0]] = None
    return x


cdef object _node_grads(Function node):
    """The gradients gathered for each output of ``node`` (a list)."""
    if node._n_out == 1:
        return [node._gacc]
    return node._gacc if node._gacc is not None else [None] * node._n_out


cdef void _give(Function parent, Py_ssize_t nr, object g, _Walk walk, object backend) except *:
    if parent._n_out == 1:
        parent._gacc = walk.add(parent._gacc, g, backend)
    else:
        if parent._gacc is None:
            parent._gacc = [None] * parent._n_out
        parent._gacc[nr] = walk.add(parent._gacc[nr], g, backend)


cdef tuple _call_backward(Function node, list gs, _Walk walk):
    """Run the node's backward (arrays) or vjp (Tensors, recorded) and return a tuple of input gradients."""
    cdef object out
    if not walk.create_graph:
        out = node.backward(*gs)
    elif getattr(type(node), "vjp") is not _base_vjp:
        out = node.vjp(*gs)
    else:
        out = _OnceDifferentiable.run(node, gs)
    return out if isinstance(out, tuple) else (out,)


cdef object _general_node_backward(Function node, _Walk walk, bint capture, bint create_graph):
    """Backward of one node with hooks, retained grads, capture or create_graph (None: skip the node)."""
    cdef list gs = _node_grads(node)
    cdef Py_ssize_t nr
    cdef TensorBase kept
    node._gacc = None
    if node._pre_hooks is not None:
        for nr, hooks in node._pre_hooks.items():
            if hooks and gs[nr] is not None:
                gs[nr] = _run_hooks(hooks, gs[nr], node.backend, create_graph,
                                    _out_meta(node, nr, True), _out_meta(node, nr, False))
    slots = walk.node_slots.get(id(node)) if capture else None
    if node._retained is not None:
        for nr, ref in node._retained.items():
            kept_obj = ref()
            if kept_obj is not None and gs[nr] is not None and not (
                    slots is not None and any(nr == target_nr for target_nr, _ in slots)):  # an input: once
                kept = <TensorBase>kept_obj
                walk.store_leaf(kept, gs[nr])
    if capture:
        if slots is not None:
            for nr, slot in slots:
                if gs[nr] is not None:
                    walk.results[slot] = walk.add(walk.results[slot], gs[nr], node.backend)
        if node._needed != 1:
            return None
    _check_versions(node)
    return _call_backward(node, gs, walk)


def run_backward(tuple roots, tuple grads, bint retain_graph=False, bint create_graph=False, inputs=None,
                 bint accumulate=True, bint allow_unused=True):
    """Backpropagate from ``roots`` (Tensors) with upstream gradients ``grads`` (None: ones).

    Without ``inputs``: gradients are accumulated into the ``.grad`` of every
    leaf that requires grad. With ``inputs`` (a tuple of Tensors, leaves or
    not): only their gradients are computed, and only the part of the graph
    that leads to them runs; with ``accumulate`` they are added to their
    ``.grad`` (``Tensor.backward(inputs=...)``), otherwise returned as a
    tuple (``minigrad.autograd.grad``; None for an input the roots do not
    depend on, which is an error unless ``allow_unused``). With
    ``create_graph`` the walk runs every node's ``vjp`` under grad mode, so
    the gradients are Tensors of a new graph.
    """
    global _walk_counter, _grad_array_type
    cdef Function node, parent
    cdef TensorBase leaf, root, kept, t
    cdef list gs, entry, seen = None
    cdef list stack = [], ready = []
    cdef Py_ssize_t stack_top = 0, ready_top = 0
    cdef tuple parents, nrs, grads_in
    cdef Py_ssize_t i, n, j, nr
    cdef long long mark
    cdef _Walk walk = _Walk.__new__(_Walk)
    cdef bint capture = inputs is not None
    cdef bint need

    walk.create_graph = create_graph
    walk.retain_graph = retain_graph
    walk.accumulate = accumulate
    walk.handed = set()
    if len(grads) != len(roots):
        raise RuntimeError(f"got {len(grads)} gradients for {len(roots)} outputs")
    for i in range(len(roots)):
        root = <TensorBase>roots[i]
        if not root._requires_grad:
            raise RuntimeError(
                f"element {i} of tensors does not require grad and does not have a grad_fn: it was not "
                f"computed from any tensor with requires_grad=True (or it was computed under no_grad)"
                if len(roots) > 1 else
                "backward() on a tensor that does not require grad: it was not computed "
                "from any tensor with requires_grad=True (or it was computed under no_grad)"
            )
    if capture:
        walk.leaf_slots = {}
        walk.node_slots = {}
        walk.results = [None] * len(inputs)
        walk.targets = list(inputs)
        for j in range(len(inputs)):
            t = <TensorBase>inputs[j]
            if not t._requires_grad:
                raise RuntimeError(f"input {j} does not require grad: nothing can be differentiated "
                                   f"with respect to it")
            if t._node is None:
                walk.leaf_slots.setdefault(id(t), j)
            else:
                walk.node_slots.setdefault(id(t._node), []).append((t._output_nr, j))

    token = _grad_enabled_set(create_graph)
    try:
        # Pass 1: count, for each reachable node, how many consumers will send
        # it a gradient (and, for leaves with hooks, how many edges reach them).
        _walk_counter += 1
        mark = _walk_counter
        if capture:
            seen = []
        for i in range(len(roots)):
            root = <TensorBase>roots[i]
            node = root._node
            if node is not None and node._mark != mark:
                node._mark = mark
                node._deps = 0
                node._gacc = None
                node._needed = 0
                _push(stack, &stack_top, node)
        while stack_top:
            node = <Function>_pop(stack, &stack_top)
            if capture:
                seen.append(node)
            if node._freed:
                continue  # reported when we reach it in pass 2
            for p in node._parents:
                if isinstance(p, Function):
                    parent = <Function>p
                    if parent._mark != mark:
                        parent._mark = mark
                        parent._deps = 0
                        parent._gacc = None
                        parent._needed = 0
                        _push(stack, &stack_top, parent)
                    parent._deps += 1
                elif p is not None and not capture:
                    leaf = <TensorBase>p
                    if leaf._hooks is not None or leaf._post_hooks is not None:
                        if walk.pending is None:
                            walk.pending = {}
                        entry = walk.pending.get(id(leaf))
                        if entry is None:
                            walk.pending[id(leaf)] = [leaf, 1, None]
                        else:
                            entry[1] += 1
        if capture:
            _mark_needed(seen, walk, mark)

        # Seed the roots' gradients.
        for i in range(len(roots)):
            root = <TensorBase>roots[i]
            g = _as_grad_array(root, grads[i], create_graph)
            if grads[i] is not None:
                walk.handed.add(id(g))
            if root._node is None:
                entry = walk.pending.get(id(root)) if walk.pending else None
                if capture:
                    walk.leaf_grad(root, g)
                elif entry is not None:  # also reached along edges: wait for them
                    entry[2] = walk.add(entry[2], g, root._backend)
                elif root._hooks is not None or root._post_hooks is not None:
                    walk.finish_hooked_leaf(root, g)
                else:
                    walk.store_leaf(root, g)
                continue
            _give(root._node, root._output_nr, g, walk, root._backend)
        for i in range(len(roots)):
            node = (<TensorBase>roots[i])._node
            if node is not None and node._deps == 0 and node._mark == mark:
                node._deps = -1  # queued once even if several roots share it
                _push(ready, &ready_top, node)

        # Pass 2: run backward on each node once all its consumers are done.
        while ready_top:
            node = <Function>_pop(ready, &ready_top)
            if node._freed:
                raise RuntimeError(
                    f"trying to backward through the graph a second time (at "
                    f"{type(node).__name__}); its saved arrays were freed by the first "
                    f"backward. Pass retain_graph=True to the first backward() if you "
                    f"need to backpropagate twice"
                )
            if (node._n_out == 1 and not create_graph and not capture and node._pre_hooks is None
                    and node._retained is None):
                # The training-step fast path: one output, raw arrays, no hooks.
                g = node._gacc
                node._gacc = None
                _check_versions(node)
                out = node.backward(g)
                grads_in = out if isinstance(out, tuple) else (out,)
            else:
                grads_in = _general_node_backward(node, walk, capture, create_graph)
                if grads_in is None:
                    continue  # captured only: nothing below this node leads to an input
            parents = node._parents
            nrs = node._parent_nrs
            n = len(parents)
            if len(grads_in) > n and any(extra is not None for extra in grads_in[n:]):
                raise RuntimeError(
                    f"{type(node).__name__}.backward returned {len(grads_in)} gradients for "
                    f"{n} inputs"
                )
            for i in range(n):
                p = parents[i]
                if p is None:
                    continue
                if i >= len(grads_in) or grads_in[i] is None:
                    raise RuntimeError(
                        f"{type(node).__name__}.backward returned no gradient for input "
                        f"{i}, which requires grad"
                    )
                gi = grads_in[i]
                if create_graph:
                    if not isinstance(gi, TensorBase):
                        raise TypeError(
                            f"{type(node).__name__}.vjp returned a {type(gi).__name__} for input {i}; "
                            f"vjp works on Tensors (backward on raw arrays)"
                        )
                elif type(gi) is not _grad_array_type and isinstance(gi, TensorBase):
                    raise TypeError(
                        f"{type(node).__name__}.backward returned a Tensor for input {i}; backward works on "
                        f"raw arrays (return tensor.array, or define vjp() for gradients of gradients)"
                    )
                else:
                    gi = _as_array(gi, node.backend)
                    _grad_array_type = type(gi)
                if isinstance(p, Function):
                    parent = <Function>p
                    nr = nrs[i] if nrs is not None else 0
                    if capture and parent._needed != 1 and id(parent) not in walk.node_slots:
                        continue
                    if parent._n_out == 1:
                        _check_grad(node, i, gi, parent._out_shape, parent._out_dtype)
                        if parent._gacc is None:
                            parent._gacc = gi
                        else:
                            parent._gacc = walk.add(parent._gacc, gi, node.backend)
                    else:
                        _check_grad(node, i, gi, parent._out_shape[nr], parent._out_dtype[nr])
                        _give(parent, nr, gi, walk, node.backend)
                    parent._deps -= 1
                    if parent._deps == 0:
                        _push(ready, &ready_top, parent)
                else:
                    leaf = <TensorBase>p
                    _check_grad(node, i, gi, leaf._array.shape, leaf._array.dtype)
                    walk.leaf_grad(leaf, gi)
            if not retain_graph:
                node._release()
    finally:
        _grad_enabled_reset(token)

    if not capture:
        return None
    for j in range(len(inputs)):
        if walk.results[j] is None and not allow_unused:
            raise RuntimeError(
                f"one of the differentiated tensors (input {j}) appears to not have been used in the graph; "
                f"set allow_unused=True if this is the desired behaviour"
            )
    if accumulate:
        for j in range(len(inputs)):
            g = walk.results[j]
            if g is not None:
                walk.results[j] = None
                walk.store_leaf(<TensorBase>inputs[j], g)
        return None
    out = []
    for j in range(len(inputs)):
        g = walk.results[j]
        t = <TensorBase>inputs[j]
        if g is None:
            out.append(None)
        elif create_graph:
            out.append(g)
        else:
            if id(g) in walk.handed or getattr(g, "base", None) is not None:
                g = g.copy()
            walk.handed.add(id(g))
            out.append(_new_tensor(g, t._backend, False))
    return tuple(out)


cdef object _out_meta(Function node, Py_ssize_t nr, bint shape):
    if node._n_out == 1:
        return node._out_shape if shape else node._out_dtype
    return node._out_shape[nr] if shape else node._out_dtype[nr]


cdef void _mark_needed(list nodes, _Walk walk, long long mark) except *:
    """Capture mode: ``_needed`` = 1 for nodes with a path to an input, 2 for the rest."""
    cdef Function node, start, parent
    cdef TensorBase leaf
    cdef list stack
    cdef Py_ssize_t top
    cdef bint need
    for start in nodes:
        if start._needed:
            continue
        stack = []
        top = 0
        _push(stack, &top, start)
        while top:
            node = <Function>stack[top - 1]
            if node._needed == 0:
                node._needed = 3  # in progress: parents first
                if not node._freed:
                    for p in node._parents:
                        if isinstance(p, Function):
                            parent = <Function>p
                            if parent._mark == mark and parent._needed == 0:
                                _push(stack, &top, parent)
                continue
            _pop(stack, &top)
            if node._needed != 3:
                continue
            need = False
            if not node._freed:
                for p in node._parents:
                    if p is None:
                        continue
                    if isinstance(p, Function):
                        parent = <Function>p
                        if parent._needed == 1 or id(parent) in walk.node_slots:
                            need = True
                            break
                    elif id(p) in walk.leaf_slots:
                        need = True
                        break
            else:
                need = True  # reached in pass 2: reports the freed graph
            node._needed = 1 if need else 2


class _OnceDifferentiable(Function):
    """Stands for the backward of a Function that has no ``vjp`` when ``create_graph=True``.

    Its values are that Function's raw backward (so first derivatives are
    right), and it depends on the gradients and on the Function's saved
    inputs and outputs, so differentiating through it again reaches it and
    raises a clear error instead of silently giving zero.
    """

    @staticmethod
    def run(Function node, list gs):
        """The input gradients of ``node`` for output gradients ``gs`` (Tensors or None), as Tensors."""
        cdef Py_ssize_t n_in = len(node._parents)
        out = node.backward(*[None if g is None else (<TensorBase>g)._array for g in gs])
        out = out if isinstance(out, tuple) else (out,)
        out = tuple(out) + (None,) * (n_in - len(out))
        slots = [i for i in range(n_in) if out[i] is not None]
        full = [None] * n_in
        if not slots:
            return tuple(full)
        inputs = [g for g in gs if g is not None]
        inputs += [t for t in node.saved_as_tensors() if isinstance(t, TensorBase) and t.requires_grad]
        values = tuple(_as_array(out[i], node.backend) for i in slots)
        res = _OnceDifferentiable.apply(*inputs, values=values, name=type(node).__name__)
        for k in range(len(slots)):
            full[slots[k]] = res[k]
        return tuple(full)

    def forward(self, *arrays, values=(), name=""):
        self.name = name
        return values

    def backward(self, *grads):
        raise RuntimeError(
            f"{self.name} is not twice differentiable: it defines backward() on arrays but no vjp(); "
            f"define {self.name}.vjp with differentiable operations to take gradients of its gradients"
        )


cpdef object unbroadcast(object grad, tuple shape):
    """Sum ``grad`` over the axes along which an input of ``shape`` was broadcast."""
    gshape = grad.shape
    if gshape == shape:
        return grad
    cdef Py_ssize_t lead = len(gshape) - len(shape)
    cdef Py_ssize_t i
    axes = list(range(lead))
    for i in range(len(shape)):
        if shape[i] == 1 and gshape[i + lead] != 1:
            axes.append(i + lead)
    if axes:
        grad = grad.sum(axis=tuple(axes), keepdims=True)
    if lead:
        grad = grad.reshape(shape)
    return grad


_base_vjp = Function.vjp
