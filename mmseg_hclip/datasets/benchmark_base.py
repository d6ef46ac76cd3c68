"""What every H-CLIP benchmark dataset adds to MMSeg's ``BaseSegDataset``.

* ``METAINFO['ignore_index']``: the label value that is never a class
  (255, or 65535 for the 16-bit sets A-847 and PC-459, where 255 is a class).
  It is the default of the ``ignore_index`` argument, written back into the
  dataset's ``metainfo`` and into every data info, so ``LoadAnnotations16``,
  the metric and the loss see one value.
* Custom class subsets (``metainfo=dict(classes=[...])``) map dropped classes
  to that ignore index instead of MMSeg's hard-coded 255.
* Checks, so that training and evaluation see the same, valid labels:
  construction fails fast, naming the folders and the expected layout, when no
  image is found or when an image has no label file; a :class:`CheckSegLabels`
  is inserted after the pipeline's annotation loader, so every label map is
  checked when loaded (one channel, the image's size, values in
  ``[0, num_classes)`` or the ignore index), naming the file.
"""
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Union

from mmcv.transforms import LoadAnnotations as _BaseLoadAnnotations

from .transforms.check_labels import CheckSegLabels
from .transforms.loading import LoadAnnotations16

#: Files listed in a missing-label message at most.
_LIST_LIMIT = 5


def voc_style_palette(num_classes: int, offset: int = 1) -> List[List[int]]:
    """Deterministic, well-spread colours for long class lists.

    The bits of ``index + offset`` are spread over R, G and B from the most
    significant bit down (the PASCAL VOC colour map), so neighbouring ids get
    very different colours and the palette never depends on a random state.

    Args:
        num_classes (int): Number of colours.
        offset (int): Added to each index; 1 avoids black for class 0.

    Returns:
        list[list[int]]: ``num_classes`` ``[R, G, B]`` triples.
    """
    palette = []
    for index in range(offset, num_classes + offset):
        r = g = b = 0
        value = index
        for shift in range(7, -1, -1):
            r |= ((value >> 0) & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
            if value == 0:
                break
        palette.append([r, g, b])
    return palette


class BenchmarkDatasetMixin:
    """Mixin for ``BaseSegDataset`` subclasses; put it first in the bases.

    Subclasses set ``METAINFO = dict(classes=..., palette=..., ignore_index=...)``.
    """

    METAINFO: dict = dict()

    def __init__(self, *args, ignore_index: Optional[int] = None, **kwargs) -> None:
        default = self.METAINFO.get('ignore_index', 255)
        self._ignore_for_label_map = default if ignore_index is None else ignore_index
        super().__init__(*args, ignore_index=self._ignore_for_label_map, **kwargs)
        self._metainfo['ignore_index'] = self.ignore_index
        self._insert_label_checks()

    # Called from BaseSegDataset.__init__ through ``self`` (classmethod in MMSeg).
    def get_label_map(self, new_classes: Optional[Sequence] = None
                      ) -> Union[Dict[int, int], None]:
        """Map old label ids to the ids of a class subset.

        Same rule as MMSeg's ``BaseSegDataset.get_label_map``, except that a
        dropped class maps to the dataset's ignore index (MMSeg hard-codes 255,
        a valid A-847 class).

        Args:
            new_classes (Sequence[str], optional): The classes asked for.

        Returns:
            dict[int, int] | None: ``{old_id: new_id}``, or None when the classes
            are the dataset's own.
        """
        old_classes = self.METAINFO.get('classes', None)
        if new_classes is None or old_classes is None or \
                list(new_classes) == list(old_classes):
            return None
        missing = [c for c in new_classes if c not in old_classes]
        if missing:
            raise ValueError(f'classes {missing} are not classes of {type(self).__name__}; '
                             'a class subset must use names from its METAINFO')
        ignore = getattr(self, '_ignore_for_label_map',
                         self.METAINFO.get('ignore_index', 255))
        new_classes = list(new_classes)
        return {
            old_id: (new_classes.index(name) if name in new_classes else ignore)
            for old_id, name in enumerate(old_classes)
        }

    def _update_palette(self) -> list:
        """Palette for the (possibly subset) classes; see ``get_label_map``."""
        palette = self._metainfo.get('palette', [])
        classes = self._metainfo.get('classes', [])
        if self.label_map is not None and len(palette) > len(classes):
            kept = sorted((new_id, old_id) for old_id, new_id in self.label_map.items()
                          if new_id != self._ignore_for_label_map)
            return [palette[old_id] for _, old_id in kept]
        return super()._update_palette()

    def load_data_list(self) -> List[dict]:
        """MMSeg's data list, each info also carrying ``ignore_index``.

        Raises:
            FileNotFoundError: The image folder does not exist, or images lack their label
                file (when the pipeline loads labels).
            ValueError: No image was found.
        """
        local = not self.backend_args
        img_dir = self.data_prefix.get('img_path', None)
        if local and not (self.ann_file and not osp.isdir(self.ann_file)) and img_dir \
                and not osp.isdir(img_dir):
            raise FileNotFoundError(
                f'{type(self).__name__}: the image folder {img_dir} does not exist; '
                f'{self._expected_layout()}')
        data_list = super().load_data_list()
        if not data_list:
            where = (f'the list {self.ann_file} is empty' if self.ann_file and
                     not osp.isdir(self.ann_file) else
                     f"no image ending in '{self.img_suffix}' under {img_dir}")
            raise ValueError(f'{type(self).__name__}: {where}; {self._expected_layout()}')
        if local and self._loads_labels():
            self._check_files_exist(data_list)
        for info in data_list:
            info['ignore_index'] = self.ignore_index
        return data_list

    # ------------------------------------------------------------------ checks
    def _expected_layout(self) -> str:
        """One sentence naming the folders and suffixes this dataset reads."""
        img_dir = self.data_prefix.get('img_path', '') or '.'
        ann_dir = self.data_prefix.get('seg_map_path', None)
        labels = (f' and its label {osp.join(ann_dir, "<name>" + self.seg_map_suffix)}'
                  if ann_dir is not None else '')
        return (f'expected every image as {osp.join(img_dir, "<name>" + self.img_suffix)}'
                f'{labels} (set data_root, data_prefix=dict(img_path=..., seg_map_path=...), '
                'img_suffix and seg_map_suffix; docs/datasets.md shows each benchmark\'s '
                'layout and converter)')

    def _loads_labels(self) -> bool:
        """Whether the pipeline reads label maps (then every image needs one)."""
        return any(isinstance(t, _BaseLoadAnnotations) and getattr(t, 'with_seg', True)
                   for t in getattr(self.pipeline, 'transforms', []))

    def _check_files_exist(self, data_list: List[dict]) -> None:
        """Every image of the list and its label file are on disk (one listing per folder)."""
        listings: Dict[str, set] = {}

        def exists(path: str) -> bool:
            folder, name = osp.split(path)
            if folder not in listings:
                try:
                    listings[folder] = set(os.listdir(folder or '.'))
                except OSError:
                    listings[folder] = set()
            return name in listings[folder]

        checks = [('image', 'img_path')] if self.ann_file and not osp.isdir(
            self.ann_file) else []
        checks.append(('label', 'seg_map_path'))
        for what, key in checks:
            missing = [info for info in data_list if key in info and not exists(info[key])]
            if not missing:
                continue
            shown = '; '.join(f"{info['img_path']} -> {info[key]}"
                              for info in missing[:_LIST_LIMIT])
            more = f' and {len(missing) - _LIST_LIMIT} more' if len(
                missing) > _LIST_LIMIT else ''
            folder = osp.dirname(missing[0][key])
            absent = (f' (the folder {folder} does not exist)' if not osp.isdir(folder)
                      else '')
            raise FileNotFoundError(
                f'{type(self).__name__}: {len(missing)} of {len(data_list)} images have no '
                f'{what} file{absent}: {shown}{more}; {self._expected_layout()}')

    def _insert_label_checks(self) -> None:
        """Put a :class:`CheckSegLabels` after each annotation loader of the pipeline."""
        transforms = getattr(self.pipeline, 'transforms', None)
        classes = self._metainfo.get('classes', None)
        if transforms is None or not classes:
            return
        checked = []
        for i, transform in enumerate(transforms):
            checked.append(transform)
            if not (isinstance(transform, _BaseLoadAnnotations)
                    and getattr(transform, 'with_seg', True)):
                continue
            if self.ignore_index > 255 and not isinstance(transform, LoadAnnotations16):
                raise ValueError(
                    f'{type(self).__name__} has 16-bit labels (ignore_index='
                    f'{self.ignore_index}) but its pipeline loads them with '
                    f'{type(transform).__name__}, which casts to uint8 and wraps every id '
                    "above 255; use dict(type='LoadAnnotations16')")
            following = transforms[i + 1] if i + 1 < len(transforms) else None
            if not isinstance(following, CheckSegLabels):
                checked.append(CheckSegLabels(num_classes=len(classes),
                                              ignore_index=self.ignore_index))
        transforms[:] = checked


__all__ = ['BenchmarkDatasetMixin', 'voc_style_palette']
