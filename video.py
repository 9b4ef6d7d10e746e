"""--record: a video of the games a3c.py --play runs, written with OpenCV."""
from cli import UserError, first_line
from tf_setup import quiet_stderr


def open_video(path, env, env_id):
    """Prove the file can be written before playing (OpenCV fails silently otherwise)."""
    import warnings

    import cv2
    try:
        with warnings.catch_warnings():                    # GLFW's warnings when there is no display
            warnings.simplefilter("ignore")
            env.reset()
            frame = env.render()
    except Exception as e:  # noqa: BLE001 -- classic control renders with pygame, an optional install
        hint = ("; MuJoCo renders with OpenGL: without a display install OSMesa (apt install libosmesa6) and set "
                "MUJOCO_GL=osmesa, or set MUJOCO_GL=egl on a GPU machine") if "OpenGL" in str(e) else ""
        raise UserError(f"--record cannot render {env_id}: {first_line(e)}{hint}") from None
    with quiet_stderr():                                   # OpenCV prints its own C++ error for a bad path
        video = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 15, (frame.shape[1], frame.shape[0]))
    if not video.isOpened():
        raise UserError(f"--record cannot write {path}: not a writable path, or not a video type OpenCV "
                        f"encodes (use .mp4)")
    return video


def write_frame(video, env):
    if video is not None:
        video.write(env.render()[:, :, ::-1])              # RGB -> BGR
