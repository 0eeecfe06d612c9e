"""Make docs/images/web_app.png: the web app in headless Chromium after restoring held-out frames of the demo.

    python docs/make_web_app_screenshot.py --work demo      # after `python -m jude_arch.demo` (its default recipe)

Starts `jude-app` on the demo's model (`python -m jude_arch.restore.app`, a free local port), opens the page in
Debian's Chromium through its chromedriver (`apt-get install chromium chromium-driver`; selenium, the
`[app-test]` extra), uploads the given held-out frames (default: the darkest of each held-out photo), presses
Restore, waits for the pictures and saves a screenshot of the whole page, palette-quantised to stay small.
"""
import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from jude_arch.data.lolblur_layout import GT_FOLDER, pair_frames
from jude_arch.restore.photo_io import read_photo
from jude_arch.tools.demo import RECIPES

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = Path('/usr/bin/chromium'), Path('/usr/bin/chromedriver')
WIDTH = 1400


def darkest_per_photo(test):
    """The darkest held-out frame (low_blur_noise) of each photo (video folder)."""
    frames = {}
    for key, lq, _ in pair_frames(test / 'low_blur_noise', test / GT_FOLDER):
        frames.setdefault(key.split('_')[0], []).append(lq)
    return [min(paths, key=lambda p: float(read_photo(p).mean())) for _, paths in sorted(frames.items())]


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def screenshot(model, photos, out, timeout=600):
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    port = _free_port()
    server = subprocess.Popen([sys.executable, '-m', 'jude_arch.restore.app', '--model-path', str(model), '--port',
                               str(port), '--device', 'cpu'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    driver = None
    try:
        for line in server.stdout:  # serves once it says where
            if 'JUDE web app:' in line:
                break
        else:
            raise SystemExit('make_web_app_screenshot: the app did not start')
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for argument in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', f'--window-size={WIDTH},1900',
                         '--disable-background-networking', '--disable-component-update', '--no-first-run'):
            options.add_argument(argument)
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)))
        driver.get(f'http://127.0.0.1:{port}/')
        wait = WebDriverWait(driver, timeout)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#photos input[type=file]'))
        driver.find_element(By.CSS_SELECTOR, '#photos input[type=file]').send_keys('\n'.join(map(str, photos)))
        wait.until(lambda d: all(p.stem in d.find_element(By.ID, 'photos').text for p in photos))
        driver.find_element(By.ID, 'restore').click()
        wait.until(lambda d: 'Restored' in d.find_element(By.ID, 'status').text)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, '#stages img')) >= 4 and all(
            img.get_attribute('naturalWidth') not in (None, '0') for img in d.find_elements(By.TAG_NAME, 'img')))
        time.sleep(2)  # the last pictures' layout
        height = driver.execute_script('return document.documentElement.scrollHeight')
        driver.set_window_size(WIDTH, height + 40)
        time.sleep(1)
        png = Path(out).with_suffix('.raw.png')
        driver.save_screenshot(str(png))
        picture = Image.open(png).convert('RGB').quantize(colors=256, dither=Image.Dither.FLOYDSTEINBERG)
        picture.save(out, optimize=True)
        png.unlink()
        return driver.find_element(By.ID, 'physics-warning').text
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(30)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--work', type=Path, default=Path('demo'), help="the finished demo's work folder")
    parser.add_argument('--recipe', choices=sorted(RECIPES), default='physics', help="the demo's recipe")
    parser.add_argument('--out', type=Path, default=ROOT / 'docs' / 'images' / 'web_app.png')
    args = parser.parse_args(argv)
    model = args.work / 'experiments' / RECIPES[args.recipe].experiment / 'models' / 'net_g_latest.pth'
    test = args.work / 'lolblur' / 'test'
    if not model.is_file():
        raise SystemExit(f'make_web_app_screenshot: no finished demo in {args.work} ({model} missing)')
    photos = darkest_per_photo(test)
    warning = screenshot(model.resolve(), [p.resolve() for p in photos], args.out)
    print(f'{args.out}: {", ".join(p.parent.name + "/" + p.name for p in photos)}; '
          f'physics warning: {warning or "none"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
