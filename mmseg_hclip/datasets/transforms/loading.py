"""16-bit-safe annotation loading."""
import mmcv
import mmengine.fileio as fileio
import numpy as np
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import TRANSFORMS


def as_label_array(seg: np.ndarray, path: str = '<array>') -> np.ndarray:
    """Check a decoded label image and give it the narrowest safe dtype.

    Args:
        seg (np.ndarray): Decoded image, shape (H, W) or (H, W, 1).
        path (str): File name used in error messages.

    Returns:
        np.ndarray: (H, W) uint8 when the file is 8-bit, otherwise uint16.
    """
    seg = np.asarray(seg)
    if seg.ndim == 3 and seg.shape[2] == 1:
        seg = seg[..., 0]
    if seg.ndim != 2:
        raise ValueError(
            f'{path}: a label map must have one channel, got shape {seg.shape}; '
            'convert colour-coded masks with the tools/dataset_converters scripts first')
    if seg.dtype == np.uint8 or seg.dtype == np.uint16:
        return seg
    if seg.dtype == np.bool_:
        return seg.astype(np.uint8)
    if not np.issubdtype(seg.dtype, np.integer):
        raise ValueError(f'{path}: label maps must hold integers, got dtype {seg.dtype}')
    if seg.size and (seg.min() < 0 or seg.max() > 65535):
        bad = seg.min() if seg.min() < 0 else seg.max()
        raise ValueError(f'{path}: label value {int(bad)} does not fit in 16 bits')
    # e.g. Pillow decodes some 16-bit PNGs as int32 ('I' mode)
    return seg.astype(np.uint16)


@TRANSFORMS.register_module()
class LoadAnnotations16(LoadAnnotations):
    """MMSeg's ``LoadAnnotations`` without the cast to uint8.

    MMSeg's loader ends with ``.astype(np.uint8)``, which silently wraps the
    class ids >= 256 of A-847 / PC-459 and their ignore value 65535. This
    loader keeps 8-bit maps as uint8 (bit-identical to MMSeg's result) and
    16-bit maps (PNG or TIFF) as uint16.

    ``reduce_zero_label`` follows MMSeg: 0 becomes the ignore value, every
    other value v becomes v - 1, and the ignore value itself stays. The ignore
    value is the data info's ``ignore_index`` (set by the H-CLIP datasets),
    else 255 — for uint8 maps this is exactly MMSeg's behaviour. A class
    subset (``label_map``) is applied with a lookup table after reduction, as
    in MMSeg.

    Required Keys:

    - seg_map_path (str)
    - reduce_zero_label (bool)
    - label_map (dict, optional)
    - ignore_index (int, optional)

    Added Keys:

    - gt_seg_map (np.ndarray): (H, W), uint8 or uint16.
    - seg_fields (list)

    Args:
        reduce_zero_label (bool, optional): Deprecated in MMSeg; leave None so
            the dataset's value is used. Defaults to None.
        backend_args (dict, optional): File backend arguments. Defaults to None.
        imdecode_backend (str): Backend of ``mmcv.imfrombytes``: 'pillow'
            (reads palette PNGs as indices), 'cv2' or 'tifffile'.
            Defaults to 'pillow'.
    """

    def _load_seg_map(self, results: dict) -> None:
        """Load ``results['seg_map_path']`` into ``results['gt_seg_map']``."""
        path = results['seg_map_path']
        img_bytes = fileio.get(path, backend_args=self.backend_args)
        seg = mmcv.imfrombytes(img_bytes, flag='unchanged', backend=self.imdecode_backend)
        if seg is None:
            raise ValueError(f'{path}: could not decode the label image')
        seg = as_label_array(seg, path)

        if self.reduce_zero_label is None:
            self.reduce_zero_label = results['reduce_zero_label']
        assert self.reduce_zero_label == results['reduce_zero_label'], \
            'Initialize dataset with `reduce_zero_label` as ' \
            f'{results["reduce_zero_label"]} but when load annotation ' \
            f'the `reduce_zero_label` is {self.reduce_zero_label}'

        ignore_index = int(results.get('ignore_index', 255))
        if ignore_index > 255 and seg.dtype == np.uint8:
            seg = seg.astype(np.uint16)
        if self.reduce_zero_label:
            zero = seg == 0
            ignored = seg == ignore_index
            seg = seg - 1  # wraps only where seg == 0, overwritten next
            seg[zero | ignored] = ignore_index

        label_map = results.get('label_map', None)
        if label_map:
            size = 256 if seg.dtype == np.uint8 else 65536
            lut = np.arange(size, dtype=np.uint32)
            for old_id, new_id in label_map.items():
                if 0 <= old_id < size:
                    lut[old_id] = new_id
            out_dtype = seg.dtype if lut.max() <= np.iinfo(seg.dtype).max else np.uint16
            seg = lut[seg].astype(out_dtype)

        results['gt_seg_map'] = seg
        results['seg_fields'].append('gt_seg_map')
