# cython: language_level=3
"""The compiled core of minigrad's reverse-mode autograd.

Everything a training step pays for on every operation lives here, so that
the per-operation overhead is C, not interpreted Python:

* ``TensorBase``: the storage of a tensor (a backend array, its gradient, its
  ``requires_grad`` flag, the node that created it and its backend);
* ``Function``: the graph node; ``Function.apply`` records it (device and
  dtype checks, grad mode, wrapping the output);
* ``run_backward``: the iterative backward walk (Kahn's algorithm over the
  recorded nodes, so a chain of any depth works), gradient accumulation into
  leaves and freeing of the graph;
* ``unbroadcast``: summing a gradient back to the shape of a broadcast input.

The numeric work itself is done by each Function's ``forward``/``backward``
on raw backend arrays; this module never imports NumPy or CuPy.
"""

from contextvars import ContextVar

# Grad mode is per thread/context, like PyTorch's, so a no_grad block in one
# thread does not switch autograd off in another.
_GRAD_ENABLED = ContextVar("minigrad_grad_enabled", default=True)
cdef object _grad_enabled_get = _GRAD_ENABLED.get

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
    return _GRAD_ENABLED.set(mode)


def _reset_grad_enabled(token):
    _GRAD_ENABLED.reset(token)


cdef inline bint _is_float(object dtype):
    return dtype.kind == "f"


cdef class TensorBase:
    """Storage and autograd state of a tensor (see ``minigrad.Tensor``).

    The fields are C members so that the engine reads them without a
    dictionary lookup; ``minigrad.Tensor`` adds the user-facing methods.
    """

    cdef object _array
    cdef object _grad
    cdef bint _requires_grad
    cdef Function _node
    cdef object _backend
    # Bumped by every in-place modification; a recorded operation remembers
    # the versions of its inputs, so backward can refuse stale saved values.
    cdef unsigned long long _version
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
    def is_leaf(self):
        """True for tensors not created by a recorded operation."""
        return self._node is None

    @property
    def _version(self):
        """How many times this tensor has been modified in place."""
        return self._version

    def _bump_version(self):
        """Record an in-place modification (called by every in-place method)."""
        self._version += 1

    def retain_grad(self):
        """Keep ``.grad`` for this non-leaf tensor after backward (like PyTorch)."""
        if self._node is None:
            return
        if not self._requires_grad:
            raise RuntimeError("can't retain_grad on a tensor that does not require grad")
        import weakref
        self._node._retained = weakref.ref(self)

    def _set_fields(self, array, backend, requires_grad=False):
        """Initialise a freshly allocated tensor (used by ``Tensor.__init__``)."""
        self._array = array
        self._backend = backend
        self._grad = None
        self._node = None
        if requires_grad and not _is_float(array.dtype):
            raise RuntimeError(
                f"only floating point tensors can require gradients, got dtype {array.dtype}"
            )
        self._requires_grad = bool(requires_grad)

    def backward(self, grad=None, retain_graph=False):
        """Compute gradients of this tensor with respect to graph leaves.

        ``grad`` is the upstream gradient (required unless the tensor has a
        single element); gradients are accumulated into the ``.grad`` of
        every leaf that requires grad. The graph is freed afterwards unless
        ``retain_graph=True``.
        """
        run_backward(self, grad, retain_graph)


cdef inline TensorBase _new_tensor(object array, object backend, bint requires_grad):
    cdef TensorBase t = <TensorBase>TensorBase.__new__(_tensor_type)
    t._array = array
    t._backend = backend
    t._requires_grad = requires_grad
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


cdef class Function:
    """A differentiable operation and, once applied, a node of the graph.

    Subclasses implement ``forward(*args, **kwargs)`` on raw backend arrays
    (Tensor arguments arrive as arrays, everything else unchanged) and
    ``backward(grad)``, which returns one gradient per positional argument
    (a tuple, or a single array for one argument; None where there is none;
    trailing entries for non-tensor arguments may be left out, and trailing
    None entries beyond the arguments given are ignored). Call
    ``Cls.apply(*args, **kwargs)``. Inside both methods ``self.xp`` is the
    array namespace (numpy or cupy) and ``self.backend`` the device's
    backend; ``self.needs_input_grad[i]`` tells whether input ``i`` needs a
    gradient, and ``self.save_for_backward(*arrays)`` keeps arrays for
    backward (they are released when the graph is freed).

    Example::

        class Square(Function):
            def forward(self, x):
                self.save_for_backward(x)
                return x * x

            def backward(self, grad):
                (x,) = self.saved_tensors
                return 2 * x * grad

        y = Square.apply(minigrad.tensor([3.0], requires_grad=True))
    """

    cdef public object backend
    cdef public object xp
    cdef public tuple needs_input_grad
    cdef public tuple saved_tensors
    # Set by forward when the output lives on another backend (device copies).
    cdef public object output_backend
    cdef tuple _parents
    cdef tuple _versions
    cdef object _out_shape
    cdef object _out_dtype
    cdef object _retained
    cdef object _gacc
    cdef long long _mark
    cdef Py_ssize_t _deps
    cdef bint _freed
    cdef object __weakref__

    @classmethod
    def apply(cls, *args, **kwargs):
        """Run ``forward`` on the arrays of ``args`` and record the node."""
        return _apply(cls, args, kwargs)

    def forward(self, *args, **kwargs):
        """Compute the output array from input arrays (override)."""
        raise NotImplementedError(f"{type(self).__name__}.forward is not implemented")

    def backward(self, grad):
        """Return the gradients of the inputs given the output's (override)."""
        raise NotImplementedError(f"{type(self).__name__}.backward is not implemented")

    def save_for_backward(self, *arrays):
        """Keep arrays needed by ``backward``; freed with the graph."""
        self.saved_tensors = arrays

    @property
    def parents(self):
        """Per positional input: its creator Function, the leaf Tensor, or None."""
        return self._parents

    @property
    def next_functions(self):
        """Alias of ``parents`` (PyTorch's name)."""
        return self._parents

    def __repr__(self):
        return f"<{type(self).__name__} backward node>"

    cdef void _release(self):
        # Drop everything saved for backward; keep the structure so a second
        # walk can report the error instead of silently producing zeros.
        self.saved_tensors = None
        self._versions = ()
        attrs = getattr(self, "__dict__", None)  # Python subclasses keep state there
        if attrs:
            attrs.clear()
        self._freed = True


cdef object _apply(type cls, tuple args, dict kwargs):
    cdef Py_ssize_t n = len(args)
    cdef Py_ssize_t i
    cdef list arrays = list(args)
    cdef object backend = None
    cdef object float_dtype = None
    cdef object dt
    cdef object a
    cdef TensorBase t
    cdef bint any_requires = False
    cdef bint record
    cdef Function fn
    cdef list parents
    cdef list needs

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
                elif dt is not float_dtype and dt != float_dtype:
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
        versions = []
        for i in range(n):
            a = args[i]
            if isinstance(a, TensorBase):
                t = <TensorBase>a
                versions.append((t, t._version))
                if t._requires_grad:
                    needs[i] = True
                    parents[i] = t._node if t._node is not None else t
        fn.needs_input_grad = tuple(needs)
        fn._versions = tuple(versions)
    else:
        fn.needs_input_grad = (False,) * n

    out = _as_array(fn.forward(*arrays, **kwargs), backend)

    out_backend = fn.output_backend if fn.output_backend is not None else backend
    if record and not _is_float(out.dtype):
        record = False  # integer/bool outputs (argmax, comparisons) are constants
    result = _new_tensor(out, out_backend, record)
    if record:
        fn._parents = tuple(parents)
        fn._out_shape = out.shape
        fn._out_dtype = out.dtype
        result._node = fn
    return result


cdef object _as_grad_array(TensorBase root, object grad):
    """Validate/convert the ``grad`` argument of ``backward``."""
    cdef TensorBase g
    shape = root._array.shape
    if grad is None:
        if root._array.size != 1:
            raise RuntimeError(
                f"grad can be implicitly created only for single-element outputs; "
                f"backward() on a tensor of shape {tuple(shape)} needs a grad "
                f"argument of that shape"
            )
        return root._backend.xp.ones_like(root._array)
    if isinstance(grad, TensorBase):
        g = <TensorBase>grad
        if g._backend is not root._backend:
            raise RuntimeError(
                f"grad is on {g._backend.device} but the tensor is on {root._backend.device}"
            )
        arr = g._array
    else:
        arr = root._backend.asarray(grad, dtype=root._array.dtype)
    if arr.shape != shape:
        raise RuntimeError(
            f"grad has shape {tuple(arr.shape)} but the tensor has shape {tuple(shape)}; "
            f"they must match"
        )
    if arr.dtype != root._array.dtype:
        raise TypeError(f"grad has dtype {arr.dtype}, expected {root._array.dtype}")
    # Not copied: backward functions never write to their grad argument, and
    # the caller marks this array as handed out, so a leaf that would receive
    # it unchanged gets a copy (its .grad never aliases the caller's array).
    return arr


cdef void _accumulate_leaf(TensorBase leaf, object g, set handed):
    cdef TensorBase acc
    if leaf._grad is None:
        # Reuse the array unless it is a view or was already given to another
        # leaf: then an in-place update of one .grad cannot change another.
        if g.base is not None or id(g) in handed:
            g = g.copy()
        handed.add(id(g))
        leaf._grad = _new_tensor(g, leaf._backend, False)
    else:
        acc = <TensorBase>leaf._grad
        acc._array = _as_array(acc._array + g, acc._backend)


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
    for pair in node._versions:
        t = <TensorBase>pair[0]
        if t._version != <unsigned long long>pair[1]:
            raise RuntimeError(
                f"one of the tensors needed for the gradient of {type(node).__name__} (shape "
                f"{tuple(t._array.shape)}) has been modified by an in-place operation since it was "
                f"used (version {pair[1]}, now {t._version}); compute the backward before changing it, "
                f"or change a copy (clone()) instead"
            )


def run_backward(TensorBase root, grad=None, bint retain_graph=False):
    """Backpropagate from ``root``; see ``Tensor.backward``."""
    global _walk_counter
    cdef Function node, parent
    cdef TensorBase leaf, kept
    cdef list stack, ready
    cdef tuple parents, grads
    cdef Py_ssize_t i, n
    cdef long long mark
    cdef set handed = set()

    if not root._requires_grad:
        raise RuntimeError(
            "backward() on a tensor that does not require grad: it was not computed "
            "from any tensor with requires_grad=True (or it was computed under no_grad)"
        )
    g_root = _as_grad_array(root, grad)
    if grad is not None:
        handed.add(id(g_root))
    if root._node is None:
        _accumulate_leaf(root, g_root, handed)
        return

    # Pass 1: count, for each reachable node, how many consumers will send
    # it a gradient.
    _walk_counter += 1
    mark = _walk_counter
    node = root._node
    node._mark = mark
    node._deps = 0
    node._gacc = None
    stack = [node]
    while stack:
        node = <Function>stack.pop()
        if node._freed:
            continue  # reported when we reach it in pass 2
        for p in node._parents:
            if isinstance(p, Function):
                parent = <Function>p
                if parent._mark != mark:
                    parent._mark = mark
                    parent._deps = 0
                    parent._gacc = None
                    stack.append(parent)
                parent._deps += 1

    # Pass 2: run backward on each node once all its consumers are done.
    node = root._node
    node._gacc = g_root
    ready = [node]
    while ready:
        node = <Function>ready.pop()
        if node._freed:
            raise RuntimeError(
                f"trying to backward through the graph a second time (at "
                f"{type(node).__name__}); its saved arrays were freed by the first "
                f"backward. Pass retain_graph=True to the first backward() if you "
                f"need to backpropagate twice"
            )
        _check_versions(node)
        g = node._gacc
        node._gacc = None
        if node._retained is not None:
            kept_obj = node._retained()
            if kept_obj is not None:
                _accumulate_leaf(<TensorBase>kept_obj, g, handed)
        out = node.backward(g)
        grads = out if isinstance(out, tuple) else (out,)
        parents = node._parents
        n = len(parents)
        if len(grads) > n and any(extra is not None for extra in grads[n:]):
            raise RuntimeError(
                f"{type(node).__name__}.backward returned {len(grads)} gradients for "
                f"{n} inputs"
            )
        for i in range(n):
            p = parents[i]
            if p is None:
                continue
            if i >= len(grads) or grads[i] is None:
                raise RuntimeError(
                    f"{type(node).__name__}.backward returned no gradient for input "
                    f"{i}, which requires grad"
                )
            gi = _as_array(grads[i], node.backend)
            if isinstance(p, Function):
                parent = <Function>p
                _check_grad(node, i, gi, parent._out_shape, parent._out_dtype)
                if parent._gacc is None:
                    parent._gacc = gi
                else:
                    parent._gacc = _as_array(parent._gacc + gi, node.backend)
                parent._deps -= 1
                if parent._deps == 0:
                    ready.append(parent)
            else:
                leaf = <TensorBase>p
                _check_grad(node, i, gi, leaf._array.shape, leaf._array.dtype)
                _accumulate_leaf(leaf, gi, handed)
        if not retain_graph:
            node._release()


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
