"""From a file, an upload or a dataset folder to uint8 pixels: image decoding within limits, uploads and zips, the
person-crop check, dataset layouts, samplers, training augmentation and crops cached on the device."""
