"""Camera source: video files, image folders, USB devices and network streams through OpenCV."""
