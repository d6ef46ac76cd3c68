"""Drive the demo page in headless Chromium: upload an image, type a vocabulary, press
Segment, wait for the result and save a screenshot (the README's picture comes from here).

Not part of CI (it needs a browser). Setup on Debian/Ubuntu::

    apt-get install chromium                 # the browser (Debian package)
    pip install -r projects/hclip_demo/requirements-browser.txt   # Playwright's Python API

Playwright drives the system Chromium (``--chromium``, default /usr/bin/chromium); its own
browser download (``playwright install``) is not needed. Example::

    python projects/hclip_demo/tools/browser_screenshot.py \
        configs/quickstart/hclip_tiny_shapes.py work_dirs/quickstart/iter_400.pth \
        --image shapes.png --vocabulary "background, red circle, blue square" \
        --out projects/hclip_demo/resources/screenshot.png

The script starts the page itself (same code as app.py) on a free local port, or drives an
already running one with ``--url``. It fails (exit 1) when the page shows an error or no
segmentation appears within ``--timeout`` seconds.
"""
import argparse
import os
import os.path as osp
import socket
import sys
import time

HERE = osp.dirname(osp.abspath(__file__))
PROJECT = osp.dirname(HERE)
ROOT = osp.dirname(osp.dirname(PROJECT))
for path in (PROJECT, ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)
os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')

CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                  '--disable-component-update', '--disable-sync', '--no-first-run']


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', nargs='?', help='model config (not with --url)')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint (not with --url)')
    parser.add_argument('--url', help='drive a page that is already served here')
    parser.add_argument('--image', required=True, help='image to upload')
    parser.add_argument('--vocabulary', required=True, help='text typed into the vocabulary box')
    parser.add_argument('--mode', default=None, choices=['whole', 'reference'],
                        help='inference mode to click (default: the page\'s default)')
    parser.add_argument('--score-class', default=None,
                        help='class name to pick in the score-map selector')
    parser.add_argument('--out', required=True, help='screenshot file (PNG)')
    parser.add_argument('--chromium', default='/usr/bin/chromium', help='browser executable')
    parser.add_argument('--width', type=int, default=1280)
    parser.add_argument('--height', type=int, default=900)
    parser.add_argument('--timeout', type=float, default=300, help='seconds to wait for a result')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--expect-error', default=None,
                        help='expect this error message instead of a result (error screenshots)')
    args = parser.parse_args(argv)
    if args.url is None and not (args.config and args.checkpoint):
        parser.error('give CONFIG and CHECKPOINT to start the page, or --url of a running one')
    return args


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def serve(args):
    """Start the page in this process; returns (url, demo)."""
    import app  # projects/hclip_demo/app.py
    port = _free_port()
    app_args = app.parse_args([args.config, args.checkpoint, '--port', str(port), '--device',
                               args.device])
    _, demo = app.build(app_args)
    demo.queue(default_concurrency_limit=1).launch(
        server_name='127.0.0.1', server_port=port, prevent_thread_lock=True, quiet=True)
    return f'http://127.0.0.1:{port}/', demo


def drive(url: str, args) -> str:
    """Upload, type, click, wait, screenshot. Returns the info text of the result."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, headless=True,
                                     args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport=dict(width=args.width, height=args.height))
            page.goto(url, wait_until='load', timeout=args.timeout * 1000)
            page.locator('#segment').wait_for(timeout=args.timeout * 1000)
            page.locator('#image-upload input[type=file]').set_input_files(args.image)
            # the upload shows the image in the result panel once the server has read it
            page.locator('#overlay img').wait_for(timeout=args.timeout * 1000)
            box = page.locator('#vocabulary textarea')
            box.fill('')
            box.type(args.vocabulary)
            if args.mode:
                page.locator('#mode').get_by_label(args.mode, exact=True).check()
            started = time.time()
            page.locator('#segment').click()
            if args.expect_error:
                page.get_by_text(args.expect_error).first.wait_for(
                    timeout=args.timeout * 1000)
                info = args.expect_error
            else:
                page.locator('#info').get_by_text(' s on ').wait_for(
                    timeout=args.timeout * 1000)
                info = page.locator('#info').inner_text()
                if args.score_class:
                    page.locator('#score-class input').click()
                    page.get_by_role('option', name=args.score_class, exact=True).click()
                    page.locator('#score-caption').get_by_text(args.score_class).wait_for(
                        timeout=args.timeout * 1000)
                    page.mouse.click(5, 5)  # close the dropdown
            page.wait_for_timeout(800)  # let images and messages finish appearing
            print(f'result after {time.time() - started:.1f} s in the browser')
            os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
            page.screenshot(path=args.out, full_page=True)
            return info
        finally:
            browser.close()


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.image):
        raise SystemExit(f'--image {args.image!r} does not exist')
    if not osp.isfile(args.chromium):
        raise SystemExit(f'no browser at {args.chromium!r}: apt-get install chromium, or pass '
                         '--chromium PATH')
    demo = None
    url = args.url
    if url is None:
        url, demo = serve(args)
    try:
        info = drive(url, args)
    finally:
        if demo is not None:
            demo.close()
    print(info)
    print(f'saved {args.out}')


if __name__ == '__main__':
    main()
