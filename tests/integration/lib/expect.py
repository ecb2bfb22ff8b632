"""What ckptd should report for a checkpoint, computed with real torch.

tensors_of(obj) walks what torch.load returned and lists every tensor as
(JSON Pointer path, dtype name, shape): dicts by key, lists and tuples by
index, an nn.Module by its state_dict() names, with RFC 6901 escaping
(~ -> ~0, / -> ~1). dtype names are torch's without "torch." (float32).
"""

import torch


def ptr_escape(s):
    return str(s).replace("~", "~0").replace("/", "~1")


def dtype_name(dt):
    return str(dt).replace("torch.", "")


def tensors_of(obj, prefix=""):
    out = []
    _walk(obj, prefix, out)
    return out


def layout_of(obj):
    """{path: [strides, storage_offset]} for every tensor of obj (in elements)."""
    out = []
    _walk(obj, "", out, layout=True)
    return {p: [s, o] for p, s, o in out}


def _walk(obj, prefix, out, layout=False):
    if torch.is_tensor(obj):
        if layout:
            out.append((prefix, list(obj.stride()), obj.storage_offset()))
        else:
            out.append((prefix, dtype_name(obj.dtype), list(obj.shape)))
    elif isinstance(obj, torch.nn.Module):
        for name, t in obj.state_dict().items():
            _walk(t, prefix + "/" + ptr_escape(name), out, layout)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _walk(v, prefix + "/" + ptr_escape(k), out, layout)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _walk(v, prefix + "/" + str(i), out, layout)


def storage_bytes(obj):
    """Bytes of tensor data in obj, each distinct storage counted once."""
    seen = {}
    for t in _tensors(obj):
        st = t.storage()
        seen[(st.data_ptr(), st.nbytes())] = st.nbytes()
    return sum(seen.values())


def _tensors(obj):
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, torch.nn.Module):
        for t in obj.state_dict().values():
            yield t
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def top_level_meta(obj):
    """(epoch, step, loss) as SPEC 2 derives them from a top-level dict."""
    epoch = step = loss = None
    if isinstance(obj, dict):
        if isinstance(obj.get("epoch"), int) and not isinstance(obj.get("epoch"), bool):
            epoch = obj["epoch"]
        for k in ("step", "global_step"):
            if isinstance(obj.get(k), int) and not isinstance(obj.get(k), bool):
                step = obj[k]
                break
        for k in ("loss", "val_loss"):
            v = obj.get(k)
            if isinstance(v, float):
                loss = v
                break
            if torch.is_tensor(v) and v.dim() == 0:
                loss = float(v.item())
                break
    return epoch, step, loss
