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
  call :forget_account
  sc.exe delete %SVC%
  if errorlevel 1 (
    echo lorelay: sc.exe delete failed (run as administrator?) 1>&2
    exit /b 1
  )
)
reg delete "HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\%SVC%" /f >nul 2>&1
reg delete "HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Virtualization\GuestCommunicationServices\0000C549-FACB-11E6-BD58-64006A7986D3" /f >nul 2>&1
if exist "%DEST%\lorelayd.exe" del /f /q "%DEST%\lorelayd.exe"
if exist "%DEST%\lorelayctl.exe" del /f /q "%DEST%\lorelayctl.exe"
if exist "%DEST%" rmdir "%DEST%" 2>nul
if /i "%~1"=="/purge" if exist "%DATA%" rmdir /s /q "%DATA%"
echo lorelay: uninstalled
exit /b 0

rem What install.cmd gave the virtual account NT SERVICE\lorelayd: its
rem Hyper-V Administrators membership and its ACE on the data directory
rem (both would outlive the service as an unknown SID). Best effort: absent
rem when it ran as LocalSystem, and on a system without PowerShell.
:forget_account
powershell.exe -NoProfile -NonInteractive -Command "Remove-LocalGroupMember -SID S-1-5-32-578 -Member 'NT SERVICE\%SVC%' -ErrorAction SilentlyContinue" >nul 2>&1
if exist "%DATA%" icacls "%DATA%" /remove "NT SERVICE\%SVC%" /q >nul 2>&1
exit /b 0

:wait_stopped
for /l %%i in (1,1,15) do (
  sc.exe query %SVC% | find "STOPPED" >nul 2>&1
  if not errorlevel 1 exit /b 0
  ping -n 2 127.0.0.1 >nul 2>&1
)
exit /b 0
