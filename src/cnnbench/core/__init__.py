"""What every layer shares: the error family, atomic files, the device, the entry-point door, figures' style."""
