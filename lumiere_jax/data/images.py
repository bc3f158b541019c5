"""Still images as training frames: encoded bytes (JPEG, PNG, WebP, ... anything Pillow reads) -> uint8 RGB.

Images from the web come in every mode and orientation, so one decoder puts each into the same shape: the EXIF
orientation applied (a phone photo stored sideways is shown upright), CMYK, greyscale, 16-bit and palette images
converted to RGB, transparency composited onto white. Sizes are checked from the header before any pixel is decoded,
so a huge declared size (a decompression bomb) costs nothing. Every failure is a `BadRecordError`, which the pipeline
counts as a bad record and `lumiere-data prepare --images` lists as a skipped input.

An image becomes a one-frame clip (`as_clip`), which is how records, sources and the t2i stage see it.
"""

import io

import numpy as np
from PIL import Image, ImageOps

from lumiere_jax.data.records import BadRecordError

EXTENSIONS = ('.jpg', '.jpeg', '.png', '.webp', '.bmp', '.gif', '.tif', '.tiff')
MIN_SIDE = 8  # pixels: smaller images are skipped (a 1x1 tracking pixel is not a training example)
MAX_PIXELS = 8192 * 8192  # pixels in the declared size above which an image is skipped before decoding
IMAGE_FPS = 1.0  # the frame rate written into an image's record (one frame; any positive rate works)
_BACKGROUND = (255, 255, 255)  # transparent pixels become white


def decode_image(data: bytes, *, min_side: int = MIN_SIDE, max_pixels: int = MAX_PIXELS) -> np.ndarray:
  """Encoded image bytes -> uint8 (H, W, 3) RGB, upright; `BadRecordError` naming why it cannot be used."""
  if not data:
    raise BadRecordError('empty image')
  try:
    image = Image.open(io.BytesIO(data))  # reads the header only
  except Image.DecompressionBombError as e:  # Pillow's own limit, far above ours unless max_pixels is raised
    raise BadRecordError('image too large', str(e)) from e
  except Exception as e:  # Pillow raises UnidentifiedImageError, OSError, ValueError, SyntaxError, ...
    raise BadRecordError('undecodable image', f'{type(e).__name__}: {e}') from e
  width, height = image.size
  if width * height > max_pixels:
    raise BadRecordError('image too large', f'{width}x{height} declared, above {max_pixels} pixels')
  if min(width, height) < min_side:
    raise BadRecordError('image too small', f'{width}x{height}, a side below {min_side} pixels')
  try:
    image.load()
    return to_rgb(ImageOps.exif_transpose(image))
  except Exception as e:  # truncated data, a corrupt stream, a broken EXIF block, a mode without RGB conversion
    raise BadRecordError('undecodable image', f'{type(e).__name__}: {e}') from e


def to_rgb(image: Image.Image) -> np.ndarray:
  """Any Pillow mode -> uint8 (H, W, 3) RGB; transparency (alpha or a palette's) composited onto white."""
  if image.mode in ('I;16', 'I;16B', 'I;16L', 'I', 'F'):  # 16-bit or float grey: scale to 8 bits
    values = np.asarray(image, np.float64)
    top = 65535.0 if image.mode.startswith('I;16') or values.max(initial=0) > 255 else 255.0
    image = Image.fromarray(np.clip(values / top * 255 + 0.5, 0, 255).astype(np.uint8))
  if image.mode == 'P' and 'transparency' in image.info:
    image = image.convert('RGBA')
  if image.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La'):
    background = Image.new('RGB', image.size, _BACKGROUND)
    background.paste(image.convert('RGBA'), mask=image.convert('RGBA').getchannel('A'))
    image = background
  return np.asarray(image.convert('RGB'), np.uint8)


def array_to_rgb(pixels: np.ndarray) -> np.ndarray:
  """A decoded uint8 image array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> (H, W, 3) RGB (alpha over white)."""
  pixels = np.asarray(pixels)
  if pixels.ndim == 3 and pixels.shape[-1] == 1:
    pixels = pixels[..., 0]
  if pixels.dtype != np.uint8 or not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[-1] in (3, 4))):
    raise BadRecordError('bad field', f'an image array must be uint8 (H, W[, 1|3|4]), got {pixels.dtype} '
                                      f'{pixels.shape}')
  return to_rgb(Image.fromarray(pixels))


def as_clip(rgb: np.ndarray) -> np.ndarray:
  """uint8 (H, W, 3) -> the one-frame clip (1, H, W, 3) the video pipeline takes."""
  return rgb[None]
