# Copyright (c) mmseg_hclip contributors. Licensed under the Apache License 2.0.
"""The Gradio page of the demo: :func:`build_demo` returns a ``gr.Blocks``.

The event handlers are plain functions of :class:`DemoHandlers` (tested without a
browser); errors the user can fix are raised as ``gr.Error`` so the page shows the
message (never a stack trace); anything unexpected is logged on the server and shown as
a one-line message.
"""
import logging
import os.path as osp
from typing import Optional, Tuple

import numpy as np

from .core import (MODES, PRESETS, SYNTAX_HELP, Segmenter,
                   parse_vocabulary_box, preset_vocabulary, score_map_image)

__all__ = ['DemoHandlers', 'build_demo', 'MAX_STORED_SCORES']

logger = logging.getLogger('hclip_demo')

#: Scores kept per browser session for the score-map selector (bytes, uint8 per value):
#: larger predictions are stored downscaled.
MAX_STORED_SCORES = 1 << 24


class UserError(ValueError):
    """A problem with the input that the page reports as it is."""


def _display(name: str) -> str:
    return name.split(',')[0].strip() or name


class DemoHandlers:
    """The page's callbacks, independent of Gradio's event wiring.

    Args:
        segmenter (Segmenter): The model and its controls.
        opacity (float): Opacity of the painted segmentation.
    """

    def __init__(self, segmenter: Segmenter, opacity: float = 0.5):
        self.segmenter = segmenter
        self.opacity = opacity

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def store_scores(scores: np.ndarray, limit: int = MAX_STORED_SCORES) -> np.ndarray:
        """Scores [N, H, W] in [0, 1] as uint8, downscaled so N*h*w <= ``limit``."""
        import cv2
        n, h, w = scores.shape
        factor = min(1.0, (limit / float(n * h * w))**0.5)
        size = (max(1, int(w * factor)), max(1, int(h * factor)))
        levels = np.clip(np.round(scores * 255), 0, 255).astype(np.uint8)
        if size != (w, h):
            levels = np.stack([cv2.resize(s, size, interpolation=cv2.INTER_AREA)
                               for s in levels])
        return levels

    def score_view(self, state: Optional[dict], label) -> Tuple[Optional[np.ndarray], str]:
        """The score map of class ``label`` from the stored prediction.

        Returns:
            tuple: RGB picture (image size) and a one-line caption.
        """
        if not state or label is None:
            return None, ''
        label = int(label)
        vocabulary = state['vocabulary']
        if not 0 <= label < len(vocabulary):
            raise UserError(f'class #{label} is not in the vocabulary of the last prediction '
                            f'({len(vocabulary)} classes); press Segment again.')
        scores = state['scores'][label].astype(np.float32) / 255
        picture = score_map_image(scores, state['image'])
        caption = (f'Score map of **{_display(vocabulary[label])}**: sigmoid score per pixel, '
                   f'dark blue = 0, yellow = 1 (max {scores.max():.2f}, mean '
                   f'{scores.mean():.2f}).')
        return picture, caption

    # ------------------------------------------------------------------ events
    def preview(self, path: Optional[str]) -> Optional[np.ndarray]:
        """Show the uploaded image (and report unreadable or huge files at once)."""
        if not path:
            return None
        return self.segmenter.read(path)[..., ::-1].copy()

    def segment(self, path: Optional[str], vocabulary_text: str, mode: str):
        """Segment the uploaded image.

        Returns:
            tuple: overlay (RGB), score map (RGB), class-selector choices and value, info
            (Markdown), session state.
        """
        vocabulary = parse_vocabulary_box(vocabulary_text)
        image = self.segmenter.read(path)
        seg = self.segmenter.segment(image, vocabulary, mode)
        overlay, present = seg.overlay(self.opacity)
        h, w = image.shape[:2]
        state = dict(vocabulary=seg.vocabulary, scores=self.store_scores(seg.scores),
                     image=image)
        choices = [(f'{_display(n)}', i) for i, n in enumerate(seg.vocabulary)]
        chosen = present[0][0] if present else 0
        score, caption = self.score_view(state, chosen)
        lines = [
            f'**{seg.seconds:.2f} s** on {seg.device} for {len(seg.vocabulary)} classes, '
            f'{w}x{h} image, {seg.mode} mode ({seg.view}); text embeddings '
            + ('from the cache (same vocabulary as before).' if seg.text_cached else
               'computed for this vocabulary (cached for the next image).'),
            '',
            '| class | pixels |',
            '| --- | ---: |',
        ]
        lines += [f'| {_display(seg.vocabulary[i])} | {100 * f:.1f} % |' for i, f in present]
        return overlay, score, choices, chosen, '\n'.join(lines), caption, state


def _guard(fn):
    """Run ``fn``; user errors and unexpected errors become a ``gr.Error`` message."""
    import functools

    import gradio as gr

    @functools.wraps(fn)
    def wrapped(*args):
        try:
            return fn(*args)
        except gr.Error:
            raise
        except (ValueError, TypeError, OSError) as err:
            raise gr.Error(str(err), duration=None, title='Cannot segment') from None
        except Exception as err:  # a bug or a resource problem: log it, keep the page alive
            logger.exception('demo callback %s failed', fn.__name__)
            raise gr.Error(f'Internal error ({type(err).__name__}: {err}); the server log has '
                           'the details.', duration=None, title='Internal error') from None

    return wrapped


def build_demo(segmenter: Segmenter, title: str = 'H-CLIP open-vocabulary segmentation',
               description: str = '', opacity: float = 0.5,
               default_vocabulary: str = 'person, sky, tree, grass, building, road, car'):
    """The page as a ``gr.Blocks`` (call ``.launch()`` on it).

    API (``gradio_client``): ``/segment`` (image file, vocabulary text, mode) -> overlay,
    score map, score-map class, info, caption; ``/preset`` (preset name) -> vocabulary text.
    """
    import gradio as gr

    handlers = DemoHandlers(segmenter, opacity)

    def on_segment(path, text, mode):
        overlay, score, choices, chosen, info, caption, state = handlers.segment(
            path, text, mode)
        return (overlay, score, gr.Dropdown(choices=choices, value=chosen), info, caption,
                state)

    def on_score(state, label):
        return handlers.score_view(state, label)

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f'## {title}\n{description}')
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.File(label='Image', file_types=['image'], type='filepath',
                                elem_id='image-upload')
                preset = gr.Dropdown(choices=list(PRESETS), value=None,
                                     label='Preset vocabulary (fills the box)', elem_id='preset')
                vocab = gr.Textbox(label='Vocabulary', value=default_vocabulary, lines=3,
                                   max_lines=12, info=SYNTAX_HELP, elem_id='vocabulary')
                mode = gr.Radio(choices=list(MODES), value=segmenter.default_mode,
                                label='Inference mode',
                                info='whole: one view at the model\'s input size; reference: '
                                'the authors\' protocol (crops + a global view, slower)',
                                elem_id='mode')
                run = gr.Button('Segment', variant='primary', elem_id='segment')
            with gr.Column(scale=2):
                overlay = gr.Image(label='Segmentation', type='numpy', format='png', height=420,
                                   interactive=False, elem_id='overlay')
                info = gr.Markdown(elem_id='info')
                with gr.Row():
                    score_class = gr.Dropdown(choices=[], label='Score map of class',
                                              elem_id='score-class')
                score = gr.Image(label='Score map', type='numpy', format='png', height=320,
                                 interactive=False, elem_id='score')
                caption = gr.Markdown(elem_id='score-caption')

        image.change(_guard(handlers.preview), [image], [overlay], api_name='preview')
        preset.change(_guard(lambda p: preset_vocabulary(p) if p else gr.skip()), [preset],
                      [vocab], api_name='preset')
        run.click(_guard(on_segment), [image, vocab, mode],
                  [overlay, score, score_class, info, caption, state], api_name='segment')
        score_class.input(_guard(on_score), [state, score_class], [score, caption],
                          api_name='score_map')
    return demo


def describe(config: str, checkpoint: Optional[str], segmenter: Segmenter) -> str:
    """One line for the page: which model is loaded."""
    kind = ('merged checkpoint (plain CLIP weights)' if segmenter.merged_checkpoint else
            'training checkpoint (adapter folded into CLIP for inference)')
    ckpt = osp.basename(checkpoint) if checkpoint else 'no checkpoint (random weights)'
    return (f'Model `{osp.basename(config)}` + `{ckpt}`: {kind}, on {segmenter.device}. '
            f'Images up to {segmenter.max_pixels / 1e6:.1f} megapixels.')
