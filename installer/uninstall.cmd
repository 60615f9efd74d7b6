@echo off
rem Removes the lorelayd service and its programs. The configuration and log
rem in %ProgramData%\lorelay are kept; "uninstall.cmd /purge" removes them too.
rem Run from an elevated prompt.
setlocal EnableExtensions
set "DEST=%ProgramFiles%\lorelay"
set "DATA=%ProgramData%\lorelay"
set "SVC=lorelayd"

sc.exe query %SVC% >nul 2>&1
if errorlevel 1 (
  echo lorelay: no %SVC% service is installed
) else (
  sc.exe stop %SVC% >nul 2>&1
  call :wait_stopped
  sc.exe delete %SVC%
  if errorlevel 1 (
    echo lorelay: sc.exe delete failed (run as administrator?) 1>&2
    exit /b 1
  )
)
reg delete "HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\%SVC%" /f >nul 2>&1
if exist "%DEST%\lorelayd.exe" del /f /q "%DEST%\lorelayd.exe"
if exist "%DEST%\lorelayctl.exe" del /f /q "%DEST%\lorelayctl.exe"
if exist "%DEST%" rmdir "%DEST%" 2>nul
if /i "%~1"=="/purge" if exist "%DATA%" rmdir /s /q "%DATA%"
echo lorelay: uninstalled
exit /b 0

:wait_stopped
for /l %%i in (1,1,15) do (
  sc.exe query %SVC% | find "STOPPED" >nul 2>&1 && exit /b 0
  ping -n 2 127.0.0.1 >nul 2>&1
)
exit /b 0
