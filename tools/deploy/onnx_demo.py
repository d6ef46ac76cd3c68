"""Segment an image with any vocabulary through the ONNX export, with onnxruntime alone.

    python tools/deploy/onnx_demo.py DIR demo.jpg --vocabulary "cat,sofa,wall" --out out.png

DIR is the output of tools/deploy/export_onnx.py. Nothing here imports torch (nor mmcv,
mmseg, open_clip): the runtime needs numpy, onnxruntime, opencv-python, ftfy and regex.
Tokenisation is tools/deploy/clip_tokenizer.py (CLIP's BPE, tested equal to open_clip's).

Same computation as the PyTorch model:

* text: class name x prompt templates -> tokens (cut after the last end token) ->
  ``text_encoder.onnx`` -> per class and
  template (synonyms: the first, or the mean with ``synonyms='average'``); cached per
  vocabulary within the process;
* ``--mode whole``: the image resized (OpenCV bilinear, as MMSeg's Resize) to the model's
  input size, one view;
  ``--mode reference``: the authors' protocol (resize, overlapping crops + a global view,
  scores averaged), with the settings of the exported config;
* ``head.onnx`` (N <= pad_len classes) or ``head_topk.onnx`` (N > pad_len); the scores are
  resized (bilinear, half-pixel, as torch's interpolate) in the order the segmentor uses
  (``sigmoid_before_resize`` in deploy.json: 'whole' takes the sigmoid at the head's
  resolution and resizes once; each 'reference' view's logits are resized to the view,
  then the sigmoid).

``--vocabulary``: commas separate classes; ``--vocabulary-file``: a JSON list (synonyms of
one class joined by ", ") or one class per line.
"""
import argparse
import colorsys
import json
import os.path as osp
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

HERE = osp.dirname(osp.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from clip_tokenizer import ClipTokenizer  # noqa: E402

DROPPED_CLASS_LOGIT = -100.


# ------------------------------------------------------------------------ helpers
def resize_bilinear(x: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Bilinear resize of the last two axes to ``size`` (h, w), half-pixel centres, no
    antialiasing: torch's ``interpolate(mode='bilinear', align_corners=False)``.

    Separable: ``Ry @ x @ Rx^T`` with one interpolation matrix per axis (any channel
    count, unlike cv2.resize's 512).
    """
    def matrix(n_out: int, n_in: int) -> np.ndarray:
        scale = n_in / n_out
        src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5, 0)
        i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        frac = src - i0
        m = np.zeros((n_out, n_in), dtype=np.float64)
        np.add.at(m, (np.arange(n_out), i0), 1 - frac)
        np.add.at(m, (np.arange(n_out), i1), frac)
        return m.astype(np.float32)

    h_in, w_in = x.shape[-2:]
    h_out, w_out = size
    if (h_in, w_in) == (h_out, w_out):
        return x.astype(np.float32, copy=True)
    ry, rx = matrix(h_out, h_in), matrix(w_out, w_in)
    return np.matmul(np.matmul(ry, x.astype(np.float32)), rx.T)


def cut_tokens(tokens: np.ndarray) -> np.ndarray:
    """Token ids [M, 77] -> [M, L], cut after the last end token (the largest id) of the
    batch: the text graph's sequence axis is dynamic, and with CLIP's causal mask and
    end-token pooling the padding after it cannot change the result."""
    length = int(tokens.argmax(axis=1).max()) + 1 if tokens.size else tokens.shape[1]
    return np.ascontiguousarray(tokens[:, :max(length, 2)])


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def window_boxes(size, crop, stride) -> List[Tuple[int, int, int, int]]:
    """Sliding windows ``(y1, y2, x1, x2)`` covering ``size`` (MMSeg's grid, last window
    shifted back to the border)."""
    (h, w), (ch, cw), (sh, sw) = size, crop, stride
    boxes = []
    for i in range((max(h - ch, 0) + sh - 1) // sh + 1):
        for j in range((max(w - cw, 0) + sw - 1) // sw + 1):
            y2, x2 = min(i * sh + ch, h), min(j * sw + cw, w)
            boxes.append((y2 - ch, y2, x2 - cw, x2))
    return boxes


def palette(num_classes: int) -> List[List[int]]:
    """RGB colours, the same as mmseg_hclip.apis.generate_palette (tested): hues advance
    by the golden ratio, saturation and value cycle through three levels."""
    out, seen = [], set()
    for i in range(num_classes):
        rgb = colorsys.hsv_to_rgb((i * 0.6180339887498949) % 1.0, (0.85, 0.55, 1.0)[i % 3],
                                  (0.95, 0.75, 0.55)[(i // 3) % 3])
        color = [int(round(c * 255)) for c in rgb]
        step = 0
        while tuple(color) in seen:
            step += 1
            color = [(c + step * (k + 1)) % 256 for k, c in enumerate(color)]
        seen.add(tuple(color))
        out.append(color)
    return out


def parse_vocabulary(text: Optional[str] = None, file: Optional[str] = None) -> Tuple[str, ...]:
    """Class names from ``"cat,sofa"`` or a file (JSON list or one per line); no empty or
    duplicate names."""
    if (text is None) == (file is None):
        raise ValueError('give --vocabulary "cat,sofa,wall" or --vocabulary-file FILE')
    if text is not None:
        names = [n.strip() for n in text.split(',')]
    else:
        with open(file, encoding='utf-8') as f:
            content = f.read()
        if content.lstrip().startswith('['):
            names = [str(n).strip() for n in json.loads(content)]
        else:
            names = [ln.strip() for ln in content.splitlines()]
            names = [n for n in names if n and not n.startswith('#')]
    if not any(names):
        raise ValueError('the vocabulary is empty; give at least one class name')
    for i, n in enumerate(names):
        if not n.strip(' ,'):
            raise ValueError(f'class name #{i} is empty ({n!r})')
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ValueError(f'duplicate class names: {dups}')
    return tuple(names)


# ------------------------------------------------------------------------- runtime
class OnnxSegmenter:
    """The exported model under onnxruntime.

    Args:
        export_dir (str): Output of export_onnx.py.
        threads (int): onnxruntime intra-op threads (0: its default).
        providers (list[str], optional): onnxruntime execution providers.
    """

    def __init__(self, export_dir: str, threads: int = 0,
                 providers: Optional[Sequence[str]] = None):
        import onnxruntime as ort
        meta_path = osp.join(export_dir, 'deploy.json')
        if not osp.isfile(meta_path):
            raise FileNotFoundError(f'{meta_path} does not exist: DIR must be the output of '
                                    'tools/deploy/export_onnx.py')
        with open(meta_path) as f:
            self.meta = json.load(f)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        providers = list(providers or ['CPUExecutionProvider'])

        def load(key):
            path = osp.join(export_dir, self.meta['files'][key])
            return ort.InferenceSession(path, opts, providers=providers) if osp.isfile(
                path) else None

        self.image_sess, self.text_sess = load('image'), load('text')
        self.head_sess, self.head_topk_sess = load('head'), load('head_topk')
        self.tokenizer = ClipTokenizer(
            osp.join(export_dir, self.meta['files']['bpe']), self.meta['context_length'])
        self.mean = np.array(self.meta['mean'], dtype=np.float32).reshape(1, 3, 1, 1)
        self.std = np.array(self.meta['std'], dtype=np.float32).reshape(1, 3, 1, 1)
        self.pad_len = int(self.meta['pad_len'])
        self._text_cache: Dict[Tuple[str, ...], np.ndarray] = {}

    # ------------------------------------------------------------------ text
    def text_embeddings(self, vocabulary: Sequence[str]) -> np.ndarray:
        """[N, P, C] L2-normalised text embeddings (cached per vocabulary)."""
        key = tuple(vocabulary)
        if key in self._text_cache:
            return self._text_cache[key]
        templates = self.meta['templates']
        prompts, owner = [], []
        for i, name in enumerate(key):
            synonyms = [s.strip() for s in name.split(',') if s.strip()]
            if self.meta['synonyms'] == 'first':
                synonyms = synonyms[:1]
            for syn in synonyms:
                prompts.extend(t.replace('{}', syn) for t in templates)
                owner.append(i)
        tokens = self.tokenizer(prompts)
        emb = np.concatenate([
            self.text_sess.run(None, {'tokens': cut_tokens(tokens[i:i + 1024])})[0]
            for i in range(0, len(tokens), 1024)
        ])
        p = len(templates)
        emb = emb.reshape(len(owner), p, -1)
        if len(owner) != len(key):  # 'average': mean of the normalised synonyms
            summed = np.zeros((len(key), p, emb.shape[-1]), dtype=np.float32)
            np.add.at(summed, np.array(owner), emb)
            emb = summed / np.linalg.norm(summed, axis=-1, keepdims=True)
        self._text_cache[key] = emb.astype(np.float32)
        while len(self._text_cache) > 8:
            self._text_cache.pop(next(iter(self._text_cache)))
        return self._text_cache[key]

    # ----------------------------------------------------------------- image
    def normalise(self, image_bgr: np.ndarray) -> np.ndarray:
        """BGR uint8 [H, W, 3] -> normalised RGB float32 [1, 3, H, W]."""
        rgb = image_bgr[..., ::-1] if self.meta['bgr_to_rgb'] else image_bgr
        x = rgb.transpose(2, 0, 1)[None].astype(np.float32)
        return (x - self.mean) / self.std

    def head_logits(self, views: np.ndarray, text: np.ndarray) -> np.ndarray:
        """Normalised views [V, 3, H, W] -> head logits [V, N, h', w']."""
        feats = self.image_sess.run(None, {'image': views})
        feed = {'dense': feats[0], 'text': text}
        feed.update({f'guidance_{i}': g for i, g in enumerate(feats[1:])})
        sess = self.head_topk_sess if 0 < self.pad_len < text.shape[0] else self.head_sess
        return sess.run(None, feed)[0]

    def view_scores(self, views: np.ndarray, text: np.ndarray) -> np.ndarray:
        """Sigmoid scores at the views' size [V, N, H, W] (the head's predict_by_feat)."""
        logits = self.head_logits(views, text)
        return sigmoid(resize_bilinear(logits, views.shape[-2:]))

    def segment(self, image_bgr: np.ndarray, vocabulary: Sequence[str],
                mode: Optional[str] = None) -> Dict[str, np.ndarray]:
        """Scores [N, H, W] and labels [H, W] of a BGR uint8 image."""
        import cv2
        mode = mode or self.meta['test_cfg']['mode']
        text = self.text_embeddings(vocabulary)
        h, w = image_bgr.shape[:2]
        if mode == 'whole':
            vh, vw = self.meta['image_size']
            view = self.normalise(
                cv2.resize(image_bgr, (vw, vh), interpolation=cv2.INTER_LINEAR))
            if self.meta.get('sigmoid_before_resize', False):
                scores = sigmoid(self.head_logits(view, text)[0])  # head resolution
            else:
                scores = self.view_scores(view, text)[0]  # view resolution
            scores = resize_bilinear(scores, (h, w))
        elif mode == 'reference':
            cfg = self.meta['test_cfg']
            size, crop, stride = cfg['resize_to'], cfg['crop_size'], cfg['stride']
            x = self.normalise(image_bgr)
            big = resize_bilinear(x, size)
            boxes = window_boxes(size, crop, stride)
            views = [big[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes]
            views.append(resize_bilinear(x, crop))
            s = self.view_scores(np.ascontiguousarray(np.concatenate(views)), text)
            local = np.zeros((s.shape[1], *size), dtype=np.float32)
            count = np.zeros((1, *size), dtype=np.float32)
            for v, (y1, y2, x1, x2) in zip(s[:-1], boxes):
                local[:, y1:y2, x1:x2] += v
                count[:, y1:y2, x1:x2] += 1
            glob = resize_bilinear(s[-1], size)
            scores = resize_bilinear((local / count + glob) / 2, (h, w))
        else:
            raise ValueError(f"unknown mode {mode!r}; use 'whole' or 'reference'")
        return dict(scores=scores, labels=scores.argmax(axis=0))


# ------------------------------------------------------------------------ drawing
def draw_overlay(image_bgr: np.ndarray, labels: np.ndarray, vocabulary: Sequence[str],
                 opacity: float = 0.5) -> Tuple[np.ndarray, List[Tuple[int, float]]]:
    """Colour each pixel by its class (blended with ``opacity``) and add a legend of the
    classes present, largest first. Returns (BGR image, [(label, fraction)])."""
    import cv2
    colors = np.array(palette(len(vocabulary)), dtype=np.float32)[:, ::-1]  # BGR
    out = image_bgr.astype(np.float32) * (1 - opacity) + colors[labels] * opacity
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    ids, counts = np.unique(labels, return_counts=True)
    order = np.argsort(-counts, kind='stable')
    present = [(int(ids[i]), float(counts[i]) / labels.size) for i in order]
    h, w = out.shape[:2]
    scale = max(0.3, min(h, w) / 900)
    row = int(22 * scale / 0.5) if scale > 0.5 else 12
    for r, (label, frac) in enumerate(present[:max(1, (h - 6) // max(row, 1))]):
        y = 4 + r * row
        color = tuple(int(c) for c in colors[label])
        cv2.rectangle(out, (4, y), (4 + row - 2, y + row - 2), color, -1)
        text = f'{vocabulary[label].split(",")[0].strip()} {100 * frac:.0f}%'
        cv2.putText(out, text, (8 + row, y + row - 3), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, text, (8 + row, y + row - 3), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return out, present


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('export_dir', help='output directory of export_onnx.py')
    parser.add_argument('img', help='image file')
    vocab = parser.add_mutually_exclusive_group(required=True)
    vocab.add_argument('--vocabulary', help='class names separated by commas')
    vocab.add_argument('--vocabulary-file', help='JSON list or one class per line')
    parser.add_argument('--out', required=True, help='output image (PNG)')
    parser.add_argument('--mode', choices=['whole', 'reference'], default=None,
                        help="inference mode (default: the exported config's)")
    parser.add_argument('--threads', type=int, default=0,
                        help='onnxruntime intra-op threads (0: its default)')
    parser.add_argument('--opacity', type=float, default=0.5)
    parser.add_argument('--save-scores', default=None,
                        help='also save the scores [N, H, W] as a .npy file')
    return parser.parse_args(argv)


def run(args) -> dict:
    import cv2
    if not 0 < args.opacity <= 1:
        raise ValueError(f'--opacity {args.opacity} must be in (0, 1]')
    vocabulary = parse_vocabulary(args.vocabulary, args.vocabulary_file)
    image = cv2.imread(args.img, cv2.IMREAD_COLOR) if osp.isfile(args.img) else None
    if image is None:
        raise ValueError(f'cannot read image {args.img!r} (missing, corrupt or not an image)')
    seg = OnnxSegmenter(args.export_dir, threads=args.threads)
    start = time.perf_counter()
    out = seg.segment(image, vocabulary, args.mode)
    seconds = time.perf_counter() - start
    drawn, present = draw_overlay(image, out['labels'], vocabulary, args.opacity)
    if not cv2.imwrite(args.out, drawn):
        raise ValueError(f'could not write {args.out!r}')
    if args.save_scores:
        np.save(args.save_scores, out['scores'])
    mode = args.mode or seg.meta['test_cfg']['mode']
    print(f'{args.img}: {image.shape[1]}x{image.shape[0]}, {len(vocabulary)} classes, '
          f'{mode} mode, onnxruntime {seconds:.2f} s')
    for label, frac in present:
        print(f'  {vocabulary[label]:<30s} {100 * frac:6.2f} %')
    print(f'saved {args.out}')
    return dict(out, present=present, vocabulary=vocabulary, drawing=drawn)


def main(argv=None):
    args = parse_args(argv)
    try:
        return run(args)
    except (OSError, ValueError) as err:
        raise SystemExit(f'tools/deploy/onnx_demo.py: error: {err}') from None


if __name__ == '__main__':
    main()
